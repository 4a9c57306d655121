// Handing a service's data-path queues over to the process taking its
// place: each queue stops without a word to its guest and keeps its
// journals, which the next process takes the rings over from.

/** A device record whose queues can be handed over. */
interface WithQueues {
  queues: { handOver(): void }[];
}

/** Hands over every queue of `records` (their lists emptied); returns how many. */
export function handOverQueues(records: Iterable<WithQueues>): number {
  let queues = 0;
  for (const rec of records) {
    for (const q of rec.queues) q.handOver();
    queues += rec.queues.length;
    rec.queues = [];
  }
  return queues;
}
