import {errors} from './errors.js'

/**
 * A small validator: each Check returns the typed value or throws BAD_FRAME naming the field.
 * Hand-rolled because the protocol is small and flat, and we want errors that say which field.
 */
export type Check<T> = (value: unknown, path: string) => T
export type Infer<C> = C extends Check<infer T> ? T : never

export function str(options: {min?: number; max: number; pattern?: RegExp; describe?: string}): Check<string> {
  return (value, path) => {
    if (typeof value !== 'string') throw errors.badFrame(`${path} must be a string`)
    if (value.length < (options.min ?? 0)) throw errors.badFrame(`${path} must be at least ${options.min} characters`)
    if (value.length > options.max) throw errors.badFrame(`${path} must be at most ${options.max} characters`)
    if (options.pattern && !options.pattern.test(value)) throw errors.badFrame(`${path} must be ${options.describe ?? `like ${options.pattern}`}`)
    return value
  }
}

export function int(options: {min?: number; max?: number} = {}): Check<number> {
  const min = options.min ?? Number.MIN_SAFE_INTEGER
  const max = options.max ?? Number.MAX_SAFE_INTEGER
  return (value, path) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw errors.badFrame(`${path} must be an integer`)
    if (value < min || value > max) throw errors.badFrame(`${path} must be between ${min} and ${max}`)
    return value
  }
}

export const bool: Check<boolean> = (value, path) => {
  if (typeof value !== 'boolean') throw errors.badFrame(`${path} must be true or false`)
  return value
}

export function literal<const T extends string | number>(expected: T): Check<T> {
  return (value, path) => {
    if (value !== expected) throw errors.badFrame(`${path} must be ${JSON.stringify(expected)}`)
    return expected
  }
}

export function array<T>(item: Check<T>, options: {max: number}): Check<T[]> {
  return (value, path) => {
    if (!Array.isArray(value)) throw errors.badFrame(`${path} must be an array`)
    if (value.length > options.max) throw errors.badFrame(`${path} must have at most ${options.max} items`)
    return value.map((v, i) => item(v, `${path}[${i}]`))
  }
}

export const OPTIONAL: unique symbol = Symbol('optional')
export type OptionalCheck<T> = Check<T | undefined> & {[OPTIONAL]: true}

export function optional<T>(check: Check<T>): OptionalCheck<T> {
  const wrapped = ((value: unknown, path: string) => (value === undefined ? undefined : check(value, path))) as OptionalCheck<T>
  wrapped[OPTIONAL] = true
  return wrapped
}

type Shape = Record<string, Check<unknown>>
type RequiredKeys<S extends Shape> = {[K in keyof S]: S[K] extends OptionalCheck<unknown> ? never : K}[keyof S]
type OptionalKeys<S extends Shape> = Exclude<keyof S, RequiredKeys<S>>
export type ObjectOf<S extends Shape> = {[K in RequiredKeys<S>]: Infer<S[K]>} & {[K in OptionalKeys<S>]?: Infer<S[K]>}

/** Unknown fields are refused: a typo in a field name should fail loudly, not be ignored. */
export function object<S extends Shape>(shape: S): Check<ObjectOf<S>> {
  return (value, path) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw errors.badFrame(`${path} must be an object`)
    const input = value as Record<string, unknown>
    for (const key of Object.keys(input)) {
      if (!Object.hasOwn(shape, key)) throw errors.badFrame(`${path}.${key} is not an allowed field`)
    }
    const out: Record<string, unknown> = {}
    for (const [key, check] of Object.entries(shape)) {
      const v = check(input[key], `${path}.${key}`)
      if (v !== undefined) out[key] = v
    }
    return out as ObjectOf<S>
  }
}
