// Registrations of state-change handlers and notifiers. The reducer keeps
// only ids and priorities, which is all it needs to say who is called in which
// order; the callbacks themselves live with whoever performs the effects.
import type { Draft } from './machine.js';
import { unreachable } from './machine.js';
import type { RegistryAction, StateHandlerEntry } from './types.js';

/**
 * Inserts a handler after every handler of lower or equal priority, so equal
 * priorities run in registration order when the VM starts (and in reverse
 * when it stops).
 */
function insertByPriority(handlers: readonly StateHandlerEntry[], entry: StateHandlerEntry): StateHandlerEntry[] {
  const at = handlers.findIndex((h) => entry.priority < h.priority);
  if (at < 0) return [...handlers, entry];
  return [...handlers.slice(0, at), entry, ...handlers.slice(at)];
}

/** Applies a registration. Removing what is not registered changes nothing. */
export function applyRegistry(draft: Draft, action: RegistryAction): void {
  const { handlers, notifiers } = draft.state;
  switch (action.type) {
    case 'add-state-handler': {
      if (handlers.some((h) => h.id === action.id)) {
        draft.reject(action.type, `state handler '${action.id}' is already registered`);
        return;
      }
      // NaN or an infinity would make the order depend on comparisons that
      // are always false, so the handler's place would be arbitrary.
      if (!Number.isFinite(action.priority)) {
        draft.reject(action.type, `state handler priority must be a finite number, got ${String(action.priority)}`);
        return;
      }
      draft.patch({ handlers: insertByPriority(handlers, { id: action.id, priority: action.priority }) });
      return;
    }
    case 'remove-state-handler': {
      if (!handlers.some((h) => h.id === action.id)) return;
      draft.patch({ handlers: handlers.filter((h) => h.id !== action.id) });
      return;
    }
    case 'add-notifier': {
      const list = notifiers[action.list];
      if (list.includes(action.id)) {
        draft.reject(action.type, `${action.list} notifier '${action.id}' is already registered`);
        return;
      }
      // Newest first: a notifier registered later, usually by a component
      // built on top of earlier ones, hears of the moment before them.
      draft.patch({ notifiers: { ...notifiers, [action.list]: [action.id, ...list] } });
      return;
    }
    case 'remove-notifier': {
      const list = notifiers[action.list];
      if (!list.includes(action.id)) return;
      draft.patch({ notifiers: { ...notifiers, [action.list]: list.filter((id) => id !== action.id) } });
      return;
    }
    default:
      unreachable(action);
  }
}
