import sinon from 'sinon'
import {describe, expect, it, onTestFinished, vi} from 'vitest'

import {CommitWatch} from '../../src/client/commit-watch.js'

const INTERVAL_MS = 1_000

/** A watch on a version the test moves by hand, under fake timers; teardown registered right away. */
function setup() {
  const clock = sinon.useFakeTimers({toFake: ['setInterval', 'clearInterval']})
  onTestFinished(() => clock.restore())
  const state = {version: 1, changes: 0, fail: false}
  const watch = new CommitWatch(
    () => {
      if (state.fail) throw new Error('The database connection is not open')
      return state.version
    },
    () => state.changes++,
    INTERVAL_MS,
  )
  onTestFinished(() => watch.close())
  return {clock, state, watch}
}

describe('CommitWatch', () => {
  it('polls only between start and stop, reporting the first poll of each run and then only a moved version', () => {
    const {clock, state, watch} = setup()
    clock.tick(5 * INTERVAL_MS)
    expect(state.changes).toBe(0)
    watch.start()
    watch.start() // a second start while polling is one run, not two timers
    expect(clock.countTimers()).toBe(1)
    clock.tick(INTERVAL_MS)
    expect(state.changes).toBe(1)
    clock.tick(3 * INTERVAL_MS)
    expect(state.changes).toBe(1)
    state.version = 2
    clock.tick(INTERVAL_MS)
    expect(state.changes).toBe(2)
    watch.stop()
    expect(clock.countTimers()).toBe(0)
    watch.start()
    clock.tick(INTERVAL_MS)
    expect(state.changes).toBe(3)
  })

  it('never keeps the process alive', () => {
    // Real timers: whether a timer holds the event loop open is Node's own property of it.
    const setIntervalSpy = vi.spyOn(globalThis, 'setInterval')
    onTestFinished(() => setIntervalSpy.mockRestore())
    const watch = new CommitWatch(() => 1, () => undefined, INTERVAL_MS)
    onTestFinished(() => watch.close())
    watch.start()
    const timer = setIntervalSpy.mock.results[0]?.value as NodeJS.Timeout
    expect(timer.hasRef()).toBe(false)
  })

  it('stops for good on close, and when the version can no longer be read', () => {
    const {clock, state, watch} = setup()
    watch.start()
    state.fail = true
    clock.tick(INTERVAL_MS)
    expect(clock.countTimers()).toBe(0)
    state.fail = false
    watch.start()
    clock.tick(INTERVAL_MS)
    expect(state.changes).toBe(0)
    expect(clock.countTimers()).toBe(0)
  })
})
