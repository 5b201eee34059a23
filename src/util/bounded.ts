/*
 * Bounded memories in insertion order (oldest first): what network input can add to must not grow
 * without end, and the oldest entry is the one to let go.
 */

/** Sets `key` as the newest entry of `map`, dropping the oldest once there are more than `max`. */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > max) map.delete(map.keys().next().value!)
}

/** Adds `id` to `ids` (oldest out beyond `max`); true if it was there already. */
export function rememberId(ids: Set<string>, id: string, max: number): boolean {
  if (ids.has(id)) return true
  ids.add(id)
  if (ids.size > max) ids.delete(ids.values().next().value!)
  return false
}
