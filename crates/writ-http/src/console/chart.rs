//! The audit explorer's chart: actions by verdict per hour or day, as inline SVG.

use maud::{Markup, html};
use writ_store::{ActionRow, ActionState};

/// The verdicts the chart stacks, bottom to top, with their colours.
const VERDICTS: &[(&str, &str)] = &[
    ("allow", "#1d7a3a"),
    ("approval", "#c98a00"),
    ("deny", "#b3261e"),
];

/// Counts of actions by verdict per time bucket (an hour when the actions span two days or
/// less, else a day), oldest first.
fn buckets(rows: &[ActionRow]) -> (&'static str, Vec<(String, [usize; 3])>) {
    const HOUR: i64 = 3_600_000_000;
    let times: Vec<i64> = rows.iter().map(|a| a.created.as_micros()).collect();
    let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) else {
        return ("hour", Vec::new());
    };
    let (unit, width, label_len) = if max - min <= 48 * HOUR {
        ("hour", HOUR, 13)
    } else {
        ("day", 24 * HOUR, 10)
    };
    let mut out: std::collections::BTreeMap<i64, [usize; 3]> = Default::default();
    for a in rows {
        let key = a.created.as_micros().div_euclid(width);
        let slot = VERDICTS
            .iter()
            .position(|(v, _)| *v == verdict_of(a.state))
            .unwrap_or(0);
        out.entry(key).or_default()[slot] += 1;
    }
    let labelled = out
        .into_iter()
        .map(|(key, counts)| {
            let label = writ_core::Timestamp::from_micros(key * width)
                .map(|t| t.to_string().chars().take(label_len).collect::<String>())
                .unwrap_or_default();
            (label, counts)
        })
        .collect();
    (unit, labelled)
}

/// The (top, height, verdict slot) of each non-empty segment of one stacked bar.
fn stack(counts: &[usize; 3], height: usize, tallest: usize) -> Vec<(usize, usize, usize)> {
    let mut y = height;
    let mut out = Vec::new();
    for (slot, n) in counts.iter().enumerate() {
        if *n > 0 {
            let h = (n * height / tallest).max(1);
            y = y.saturating_sub(h);
            out.push((y, h, slot));
        }
    }
    out
}

/// A stacked bar chart as inline SVG (presentation attributes only: the CSP allows no inline
/// style).
pub(super) fn chart(rows: &[ActionRow]) -> Markup {
    let (unit, data) = buckets(rows);
    let tallest = data
        .iter()
        .map(|(_, c)| c.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = 24usize;
    let gap = 8usize;
    let height = 120usize;
    let width = (data.len() * (bar + gap)).max(bar + gap);
    html! {
        figure.chart {
            svg #verdict-chart viewBox=(format!("0 0 {width} {}", height + 4)) role="img"
                aria-label=(format!("actions by verdict per {unit}")) preserveAspectRatio="xMinYMax meet" {
                @for (i, (label, counts)) in data.iter().enumerate() {
                    g data-bucket=(label) {
                        title { (label) ": " (counts[0]) " allowed, " (counts[1]) " approval, " (counts[2]) " denied" }
                        @for (y, h, slot) in stack(counts, height, tallest) {
                            rect x=(i * (bar + gap)) y=(y) width=(bar) height=(h)
                                fill=(VERDICTS[slot].1) data-verdict=(VERDICTS[slot].0) data-count=(counts[slot]) {}
                        }
                    }
                }
            }
            figcaption {
                "Actions by verdict per " (unit) ": "
                @for (verdict, colour) in VERDICTS {
                    span.legend data-colour=(colour) { (verdict) } " "
                }
                @if let (Some((first, _)), Some((last, _))) = (data.first(), data.last()) {
                    "(" (first) " … " (last) ", UTC)"
                }
            }
        }
    }
}

/// The verdict an action's state stands for, as the API's `verdict=` filter reads it.
pub(crate) fn verdict_of(state: ActionState) -> &'static str {
    match state {
        ActionState::Succeeded
        | ActionState::Failed
        | ActionState::Executing
        | ActionState::OutcomeUnknown => "allow",
        ActionState::Denied | ActionState::Rejected => "deny",
        ActionState::PendingApproval | ActionState::Expired => "approval",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bars_stack_from_the_bottom() {
        // (counts, height, tallest) → (top, height, slot) of each segment
        for (counts, expected) in [
            ([0, 0, 0], vec![]),
            ([1, 0, 0], vec![(60, 60, 0)]),
            ([1, 1, 0], vec![(60, 60, 0), (0, 60, 1)]),
            ([0, 0, 2], vec![(0, 120, 2)]),
        ] {
            assert_eq!(stack(&counts, 120, 2), expected, "{counts:?}");
        }
    }

    fn action_at(micros: i64, state: writ_store::ActionState) -> ActionRow {
        let t = writ_core::Timestamp::from_micros(micros)
            .unwrap_or_else(|_| writ_core::Timestamp::now());
        ActionRow {
            id: writ_core::ActionId::generate(),
            agent: "bot".into(),
            user: "alice".into(),
            grant: None,
            connector: "github".into(),
            operation: "create_issue".into(),
            action_hash: String::new(),
            idempotency_key: None,
            state,
            request: json!({}),
            result: None,
            created: t,
            updated: t,
        }
    }

    #[test]
    fn actions_are_counted_by_verdict_per_hour_or_day() {
        use writ_store::ActionState::*;
        const HOUR: i64 = 3_600_000_000;
        let base = 1_780_000_000 * 1_000_000 / HOUR * HOUR;
        let rows = vec![
            action_at(base, Succeeded),
            action_at(base + 10, Denied),
            action_at(base + HOUR, PendingApproval),
            action_at(base + HOUR + 1, Rejected),
        ];
        let (unit, data) = buckets(&rows);
        assert_eq!(unit, "hour");
        assert_eq!(
            data.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            vec![[1, 0, 1], [0, 1, 1]]
        );
        let rows = vec![
            action_at(base, Succeeded),
            action_at(base + 72 * HOUR, Expired),
        ];
        let (unit, data) = buckets(&rows);
        assert_eq!(unit, "day");
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].0.len(), 10, "{data:?}");
        assert_eq!(buckets(&[]).1.len(), 0);
    }
}
