//! Slot choice and prefix matching, as pure functions over what each slot's KV cells hold (like
//! llama.cpp's server, which picks the slot with the longest common prefix before anything is
//! decoded). No llama.cpp context here: the scheduler applies the plan.

use llama_cpp_2::token::LlamaToken;

/// What the choice needs to know about one slot.
#[derive(Debug, Clone, Copy)]
pub struct SlotView<'a> {
    /// No request is running in it.
    pub free: bool,
    /// The tokens whose KV cells it holds, in position order.
    pub cells: &'a [LlamaToken],
    /// Admission counter value when last used.
    pub last_used: u64,
}

/// Where a new request's cached prompt prefix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Keep the slot's own first `n` cells and remove the rest.
    Keep(usize),
    /// Replace the slot's cells with the first `n` cells of slot `donor` (a longer match).
    CopyFrom { donor: usize, n: usize },
}

/// The free slot a request goes to: the one whose cells the prompt continues whole (the previous
/// turn of its conversation; the longest if several), else the least recently used, whose cells
/// are the least likely to be wanted again. A prefix the prompt shares with any other slot is
/// copied into the chosen one ([`plan_reuse`]), so a request never takes the slot of another
/// conversation's last turn to reuse its instruction text while an idle one is there.
/// `None` when all are busy.
pub fn pick_slot(slots: &[SlotView<'_>], prompt: &[LlamaToken]) -> Option<usize> {
    let free = || slots.iter().enumerate().filter(|(_, s)| s.free);
    let continued = free()
        .filter(|(_, s)| !s.cells.is_empty() && prompt.starts_with(s.cells))
        .max_by_key(|(_, s)| (s.cells.len(), std::cmp::Reverse(s.last_used)));
    continued
        .or_else(|| free().min_by_key(|(_, s)| s.last_used))
        .map(|(id, _)| id)
}

/// How slot `slot_id` gets the longest cached prefix of `prompt`: its own cells, or a copy from
/// any other slot (busy or not) that shares more, typically the instruction text every Leafresh
/// prompt begins with. The last prompt token is never reused: its logits give the first new
/// token, so it is always computed.
pub fn plan_reuse(slots: &[SlotView<'_>], slot_id: usize, prompt: &[LlamaToken]) -> Reuse {
    let usable = prompt.len().saturating_sub(1);
    let own = common_prefix(slots[slot_id].cells, prompt).min(usable);
    slots
        .iter()
        .enumerate()
        .filter(|(id, _)| *id != slot_id)
        .map(|(id, s)| (id, common_prefix(s.cells, prompt).min(usable)))
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > own)
        .map_or(Reuse::Keep(own), |(donor, n)| Reuse::CopyFrom { donor, n })
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&id| LlamaToken::new(id)).collect()
    }

    fn view(free: bool, cells: &[LlamaToken], last_used: u64) -> SlotView<'_> {
        SlotView {
            free,
            cells,
            last_used,
        }
    }

    #[test]
    fn the_free_slot_whose_cells_the_prompt_continues_is_picked() {
        let (a, b, c) = (
            tokens(&[1, 2, 3]),
            tokens(&[1, 2, 9]),
            tokens(&[1, 2, 3, 4]),
        );
        let prompt = tokens(&[1, 2, 3, 4, 5]);
        let slots = [view(true, &b, 1), view(true, &a, 2), view(false, &c, 3)];
        // The busy slot is continued further, but only a free one can take the request.
        assert_eq!(pick_slot(&slots, &prompt), Some(1));
    }

    #[test]
    fn another_conversations_turn_is_not_taken_for_a_shared_beginning() {
        // Slot 0 holds a finished turn that shares the instruction (1, 2) and more with the new
        // prompt; slot 1 is idle. The prompt goes to slot 1 and copies the shared cells.
        let turn = tokens(&[1, 2, 3, 7, 8]);
        let idle = tokens(&[1, 2]);
        let prompt = tokens(&[1, 2, 3, 4]);
        let slots = [view(true, &turn, 5), view(true, &idle, 1)];
        assert_eq!(pick_slot(&slots, &prompt), Some(1));
        assert_eq!(
            plan_reuse(&slots, 1, &prompt),
            Reuse::CopyFrom { donor: 0, n: 3 }
        );
    }

    #[test]
    fn among_equal_matches_the_least_recently_used_slot_is_picked() {
        let empty = tokens(&[]);
        let prompt = tokens(&[7, 8]);
        let slots = [
            view(true, &empty, 5),
            view(true, &empty, 2),
            view(true, &empty, 9),
        ];
        assert_eq!(pick_slot(&slots, &prompt), Some(1));
    }

    #[test]
    fn no_slot_is_picked_when_all_are_busy() {
        let cells = tokens(&[1]);
        let slots = [view(false, &cells, 0), view(false, &cells, 1)];
        assert_eq!(pick_slot(&slots, &tokens(&[1, 2])), None);
    }

    #[test]
    fn a_longer_prefix_in_another_slot_is_copied_even_from_a_busy_one() {
        let own = tokens(&[1, 2]);
        let donor = tokens(&[1, 2, 3, 4, 99]);
        let prompt = tokens(&[1, 2, 3, 4, 5, 6]);
        let slots = [view(true, &own, 0), view(false, &donor, 1)];
        assert_eq!(
            plan_reuse(&slots, 0, &prompt),
            Reuse::CopyFrom { donor: 1, n: 4 }
        );
    }

    #[test]
    fn the_slot_keeps_its_own_cells_when_no_other_matches_more() {
        let own = tokens(&[1, 2, 3, 8]);
        let other = tokens(&[1, 2, 3]);
        let prompt = tokens(&[1, 2, 3, 4]);
        let slots = [view(true, &own, 0), view(true, &other, 1)];
        assert_eq!(plan_reuse(&slots, 0, &prompt), Reuse::Keep(3));
    }

    #[test]
    fn the_last_prompt_token_is_always_computed() {
        // The same prompt again: every cell matches, but the last token's logits are needed.
        let prompt = tokens(&[4, 5, 6]);
        let slots = [view(true, &prompt, 0)];
        assert_eq!(plan_reuse(&slots, 0, &prompt), Reuse::Keep(2));
        let empty = tokens(&[]);
        let other = [view(true, &empty, 0), view(false, &prompt, 1)];
        assert_eq!(
            plan_reuse(&other, 0, &prompt),
            Reuse::CopyFrom { donor: 1, n: 2 }
        );
    }

    #[test]
    fn nothing_is_reused_from_a_different_start() {
        let own = tokens(&[9, 9]);
        let prompt = tokens(&[1, 2]);
        assert_eq!(
            plan_reuse(&[view(true, &own, 0)], 0, &prompt),
            Reuse::Keep(0)
        );
        assert_eq!(common_prefix(&own, &prompt), 0);
    }
}
