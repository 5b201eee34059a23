import {describe, expect, it} from 'vitest'

import {KeyedMutex} from '../../src/util/keyed-mutex.js'

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return {promise, resolve, reject}
}

/** Lets every pending promise callback run (one macrotask turn); not a timed wait. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

describe('KeyedMutex', () => {
  it('runs tasks for the same key one at a time, in the order they were queued', async () => {
    const mutex = new KeyedMutex()
    const log: string[] = []
    const gates = [deferred(), deferred(), deferred()]
    const runs = gates.map((gate, i) =>
      mutex.run('k', async () => {
        log.push(`start ${i}`)
        await gate.promise
        log.push(`end ${i}`)
        return i
      }),
    )

    await settle()
    expect(log).toEqual(['start 0'])
    // Releasing a later task first must not let it jump the queue.
    gates[2]!.resolve()
    gates[1]!.resolve()
    await settle()
    expect(log).toEqual(['start 0'])

    gates[0]!.resolve()
    expect(await Promise.all(runs)).toEqual([0, 1, 2])
    expect(log).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2'])
  })

  it('runs tasks for different keys concurrently', async () => {
    const mutex = new KeyedMutex()
    const gateA = deferred()
    const log: string[] = []
    const a = mutex.run('a', async () => {
      log.push('start a')
      await gateA.promise
      log.push('end a')
    })
    // b completes while a is still waiting on its gate
    await mutex.run('b', async () => {
      log.push('b')
    })
    expect(log).toEqual(['start a', 'b'])
    gateA.resolve()
    await a
    expect(log).toEqual(['start a', 'b', 'end a'])
  })

  it('passes a rejection to its caller and does not block the next task', async () => {
    const mutex = new KeyedMutex()
    const gate = deferred()
    const failing = mutex.run('k', async () => {
      await gate.promise
      throw new Error('boom')
    })
    const next = mutex.run('k', async () => 'next ran')
    gate.resolve()
    await expect(failing).rejects.toThrow('boom')
    await expect(next).resolves.toBe('next ran')
  })

  it('waits for a rejected task to finish before starting the next', async () => {
    const mutex = new KeyedMutex()
    const gate = deferred()
    const log: string[] = []
    const failing = mutex.run('k', async () => {
      log.push('start fail')
      await gate.promise
      log.push('end fail')
      throw new Error('boom')
    })
    const next = mutex.run('k', async () => {
      log.push('next')
    })
    await settle()
    expect(log).toEqual(['start fail'])
    gate.resolve()
    await Promise.allSettled([failing, next])
    expect(log).toEqual(['start fail', 'end fail', 'next'])
  })

  it('survives a task that throws synchronously', async () => {
    const mutex = new KeyedMutex()
    const throwsSync = (() => {
      throw new Error('sync boom')
    }) as unknown as () => Promise<void>
    await expect(mutex.run('k', throwsSync)).rejects.toThrow('sync boom')
    await expect(mutex.run('k', async () => 42)).resolves.toBe(42)
  })

  it('keeps working for a key after its queue has drained', async () => {
    const mutex = new KeyedMutex()
    expect(await mutex.run('k', async () => 1)).toBe(1)
    expect(await mutex.run('k', async () => 2)).toBe(2)
    // and a new queue on the same key still serialises
    const gate = deferred()
    const log: number[] = []
    const first = mutex.run('k', async () => {
      await gate.promise
      log.push(1)
    })
    const second = mutex.run('k', async () => {
      log.push(2)
    })
    await settle()
    expect(log).toEqual([])
    gate.resolve()
    await Promise.all([first, second])
    expect(log).toEqual([1, 2])
  })
})
