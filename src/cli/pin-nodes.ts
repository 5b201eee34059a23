import type {MessengerClient} from '../client/client.js'
import {renderError} from './render.js'

/**
 * After login or register on a list of nodes: pins the other nodes' certificates now (see
 * MessengerClient.pinOtherNodes) and says on stderr what could not be checked. The login itself
 * stands: it was made on a node whose certificate was checked.
 */
export async function pinOtherNodes(client: MessengerClient): Promise<void> {
  const {unreachable, changed} = await client.pinOtherNodes()
  for (const node of unreachable) {
    process.stderr.write(`Warning: ${node} did not answer, so its certificate is not pinned yet; it will be pinned the first time this profile connects to it.\n`)
  }
  for (const error of changed) process.stderr.write(renderError(error.message, error.hint).replace(/^Error: /, 'Warning: '))
}
