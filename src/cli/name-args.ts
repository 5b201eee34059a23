import {Args} from '@oclif/core'
import {normalizeGroupName, normalizeNewGroupName, normalizeUsername} from '../protocol/rules.js'

/**
 * Positional USER and NAME arguments, checked with the server's rules while the command line is
 * parsed (BAD_USERNAME / BAD_GROUP_NAME, exit 2), so a typo costs no round trip and an empty one
 * never reaches the wire as a bare schema error. The value is normalised (trimmed, lower case).
 * `ignoreStdin`: a missing argument is an error, never read from stdin (which may hold a message).
 */
export const userArg = (description: string) =>
  Args.string({description, required: true, ignoreStdin: true, parse: async (input) => normalizeUsername(input)})

export const groupArg = (description: string) =>
  Args.string({description, required: true, ignoreStdin: true, parse: async (input) => normalizeGroupName(input)})

/** NAME of a group being created: also begins with a letter or a digit (normalizeNewGroupName). */
export const newGroupArg = (description: string) =>
  Args.string({description, required: true, ignoreStdin: true, parse: async (input) => normalizeNewGroupName(input)})
