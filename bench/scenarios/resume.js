// resume: session-token logins per second (many pipelined resume requests over several
// connections), and password logins per second at the DEFAULT scrypt cost (report only).
import {PASSWORD, startServer} from '../lib/server.js'
import {rawConnect} from '../lib/raw.js'
import {LOGINS_PER_ADDRESS, loginTokens, loopbackAddress} from '../lib/users.js'
import {envInt, log, monoUs, recordPhase, round, sleep} from '../lib/util.js'

export const target = {perSec: 2_000}

const USERS = 8
const CONNECTIONS = 8
const PIPELINE = 32

export async function run() {
  const seconds = envInt('BENCH_RESUME_SECONDS', 5)
  const users = Array.from({length: USERS}, (_, i) => `resumer${i}`)
  // Default scrypt cost: password logins are measured as a user would see them.
  const server = await startServer({name: 'resume', users})
  const tokens = [...(await loginTokens(server.port, users)).values()]

  let from = monoUs()
  const invisible = await tokenLogins(server.port, tokens, false, seconds)
  recordPhase('token', from)
  log(`resume: ${Math.round(invisible.perSec)} token logins/s (online: false)`)
  from = monoUs()
  const online = await tokenLogins(server.port, tokens, true, Math.min(seconds, 3))
  recordPhase('tokenOnline', from)
  log(`resume: ${Math.round(online.perSec)} token logins/s (online: true)`)
  from = monoUs()
  const password = await passwordLogins(server.port, users, seconds)
  recordPhase('password', from)
  log(`resume: ${password.perSec.toFixed(1)} password logins/s at the default scrypt cost`)
  await server.stop()
  return {
    perSec: round(invisible.perSec, 0),
    onlinePerSec: round(online.perSec, 0),
    passwordLoginsPerSec: round(password.perSec, 1),
    failed: invisible.failed + online.failed + password.failed,
    target,
  }
}

/** CONNECTIONS connections, each with PIPELINE resume requests in flight, for `seconds`. */
async function tokenLogins(port, tokens, online, seconds) {
  const connections = await Promise.all(Array.from({length: CONNECTIONS}, () => rawConnect(port)))
  await Promise.all(connections.map((c) => c.hello()))
  let ok = 0
  let failed = 0
  let counting = false
  let running = true
  const lanes = connections.flatMap((c, ci) =>
    Array.from({length: PIPELINE}, async (_, li) => {
      let i = ci * PIPELINE + li
      while (running) {
        const reply = await c.request('resume', {token: tokens[i++ % tokens.length], online})
        if (!counting) continue
        if (reply.error) failed++
        else ok++
      }
    }),
  )
  await sleep(500)
  counting = true
  const t0 = performance.now()
  await sleep(seconds * 1000)
  const perSec = ok / ((performance.now() - t0) / 1000)
  counting = false
  running = false
  await Promise.race([Promise.all(lanes), sleep(10_000)])
  for (const c of connections) c.close()
  return {perSec, failed}
}

/**
 * Sequential password logins on several connections from distinct source addresses (each address
 * stays under the server's per-address limit), for `seconds` or until every address used its share.
 */
async function passwordLogins(port, users, seconds) {
  const lanes = 16
  const connections = await Promise.all(Array.from({length: lanes}, (_, i) => rawConnect(port, {localAddress: loopbackAddress(100 + i)})))
  await Promise.all(connections.map((c) => c.hello()))
  let ok = 0
  let failed = 0
  let lastError = ''
  const deadline = performance.now() + seconds * 1000
  const t0 = performance.now()
  await Promise.all(
    connections.map(async (c, ci) => {
      // hello above did not count; every login does.
      for (let n = 0; n < LOGINS_PER_ADDRESS && performance.now() < deadline; n++) {
        const reply = await c.request('login', {username: users[(ci + n) % users.length], password: PASSWORD, online: false})
        if (reply.error) {
          failed++
          lastError = reply.error.code
        } else ok++
      }
    }),
  )
  const perSec = ok / ((performance.now() - t0) / 1000)
  for (const c of connections) c.close()
  if (failed > 0) log(`resume: ${failed} password logins failed (last: ${lastError})`)
  return {perSec, failed}
}

export function rows(r) {
  return [
    {figure: 'token logins/s (resume, invisible)', value: r.perSec, target: `>= ${target.perSec}`, met: r.perSec >= target.perSec},
    {figure: 'token logins/s (resume, online)', value: r.onlinePerSec, target: '(report)', met: null},
    {figure: 'password logins/s, default scrypt', value: r.passwordLoginsPerSec, target: '(report)', met: null},
  ]
}
