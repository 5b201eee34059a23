/**
 * Serialises async work per key: work for one key runs in call order, one at a time, while other
 * keys go on in parallel. For read-modify-write sequences the store cannot make atomic (the server's
 * login-failure count, the Redis store's multi-round-trip enqueue). Lives outside server/ and store/
 * because both use it.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>()

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve()
    const current = previous.then(work, work)
    const tail = current.catch(() => undefined)
    this.tails.set(key, tail)
    try {
      return await current
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}
