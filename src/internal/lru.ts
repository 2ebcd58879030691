/**
 * The one bounded map of the library, least recently used out first: the resolver cache's answers and the MTA-STS
 * policy store both sit on it.
 *
 * A `Map` iterates in insertion order, so re-inserting a key on every touch keeps the least recently used key first
 * and eviction is O(1). State is touched only inside synchronous steps, which JavaScript runs without interleaving.
 *
 * @internal
 */

/** @internal */
export class Lru<K, V> {
  private readonly entries = new Map<K, V>()

  /** `capacity` 0 keeps nothing: every `set` is dropped at once. */
  constructor(readonly capacity: number) {}

  get size(): number {
    return this.entries.size
  }

  /** The value, now the most recently used. */
  get(key: K): V | undefined {
    const value = this.entries.get(key)
    if (value === undefined) return undefined
    this.entries.delete(key)
    this.entries.set(key, value)
    return value
  }

  /** Stores the value as the most recently used, evicting the least recently used beyond the capacity. */
  set(key: K, value: V): void {
    this.entries.delete(key)
    if (this.capacity <= 0) return
    this.entries.set(key, value)
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next()
      if (oldest.done === true) break
      this.entries.delete(oldest.value)
    }
  }

  delete(key: K): void {
    this.entries.delete(key)
  }

  /** Keys from the least to the most recently used. */
  keys(): IterableIterator<K> {
    return this.entries.keys()
  }
}
