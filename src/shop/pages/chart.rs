//! The dashboard's daily-spend chart as server-rendered SVG geometry — integer math on
//! nano-dollars, no floats, no JavaScript — and the same days as the rows of a table (the
//! bars' amounts were in tooltips only, out of reach of a keyboard or a screen reader).

use crate::money::Usd;
use crate::shop::usage::DailySpend;

/// Left edge of the plot (room for the money labels, `$0.0000025` at the labels' size).
const LEFT: i64 = 96;
/// Top margin.
const TOP: i64 = 12;
/// Plot height in SVG units.
const PLOT_H: i64 = 200;
/// Horizontal room per day.
const SLOT: i64 = 26;
/// Bar width within a slot.
const BAR_W: i64 = 18;
/// Right margin.
const RIGHT_PAD: i64 = 10;
/// Room under the baseline for the date labels.
const BOTTOM: i64 = 30;

/// One day's bar.
pub(super) struct Bar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    /// Tooltip: date and amount.
    pub title: String,
    /// The last (current) day.
    pub today: bool,
}

/// A horizontal grid line with its money label.
pub(super) struct GridLine {
    pub y: i64,
    pub label: Usd,
}

/// A date under the axis.
pub(super) struct XLabel {
    pub x: i64,
    pub text: String,
}

/// One day as a row of the chart's table.
pub(super) struct DayRow {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Charged that day.
    pub spent: Usd,
    /// The last (current) day.
    pub today: bool,
}

/// Everything the SVG and its table need.
pub(super) struct Chart {
    pub width: i64,
    pub height: i64,
    pub left: i64,
    pub right: i64,
    pub baseline: i64,
    pub bars: Vec<Bar>,
    pub grid: Vec<GridLine>,
    pub x_labels: Vec<XLabel>,
    /// The days, oldest first, for the table.
    pub days: Vec<DayRow>,
    /// Nothing spent in the whole range.
    pub empty: bool,
}

/// The smallest 1, 2 or 5 × 10ⁿ nano-dollars at or above `max` (one cent when nothing was spent).
fn nice_ceiling(max: i64) -> i64 {
    if max <= 0 {
        return 10_000_000;
    }
    let mut power: i64 = 1;
    loop {
        for m in [1, 2, 5] {
            let c = power.saturating_mul(m);
            if c >= max {
                return c;
            }
        }
        if power > i64::MAX / 10 {
            return max;
        }
        power *= 10;
    }
}

/// Lay out `days` (oldest first) as bars scaled to a round maximum.
pub(super) fn build(days: &[DailySpend]) -> Chart {
    let n = i64::try_from(days.len()).unwrap_or(0);
    let max = days.iter().map(|d| d.spent_usd.nanos()).max().unwrap_or(0);
    let scale = nice_ceiling(max);
    let baseline = TOP + PLOT_H;
    let right = LEFT + n.max(1) * SLOT;
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let i = i64::try_from(i).unwrap_or(0);
            let spent = d.spent_usd.nanos().max(0);
            let mut h = i64::try_from(i128::from(spent) * i128::from(PLOT_H) / i128::from(scale))
                .unwrap_or(PLOT_H)
                .min(PLOT_H);
            if spent > 0 && h == 0 {
                h = 1;
            }
            Bar {
                x: LEFT + i * SLOT + (SLOT - BAR_W) / 2,
                y: baseline - h,
                w: BAR_W,
                h,
                title: format!("{}: ${}", d.date, d.spent_usd),
                today: i == n - 1,
            }
        })
        .collect();
    let grid = [(0, 0), (PLOT_H / 2, scale / 2), (PLOT_H, scale)]
        .into_iter()
        .map(|(up, nanos)| GridLine {
            y: baseline - up,
            label: Usd::from_nanos(nanos),
        })
        .collect();
    let x_labels = days
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 == 0 || *i + 1 == days.len())
        .filter(|(i, _)| *i + 1 == days.len() || *i + 4 <= days.len())
        .map(|(i, d)| XLabel {
            x: LEFT + i64::try_from(i).unwrap_or(0) * SLOT + SLOT / 2,
            text: d.date.get(5..).unwrap_or(&d.date).to_string(),
        })
        .collect();
    let days = days
        .iter()
        .enumerate()
        .map(|(i, d)| DayRow {
            date: d.date.clone(),
            spent: d.spent_usd,
            today: i + 1 == days.len(),
        })
        .collect();
    Chart {
        width: right + RIGHT_PAD,
        height: baseline + BOTTOM,
        left: LEFT,
        right,
        baseline,
        bars,
        grid,
        x_labels,
        days,
        empty: max <= 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, nanos: i64) -> DailySpend {
        DailySpend {
            date: date.into(),
            spent_usd: Usd::from_nanos(nanos),
        }
    }

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0), 10_000_000);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7_000_000), 10_000_000);
        assert_eq!(nice_ceiling(12_345_678), 20_000_000);
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }

    #[test]
    fn bars_scale_with_integer_math() {
        let days: Vec<DailySpend> = (1..=30)
            .map(|i| {
                day(
                    &format!("2026-11-{i:02}"),
                    if i == 30 {
                        20_000_000
                    } else if i == 2 {
                        1
                    } else {
                        0
                    },
                )
            })
            .collect();
        let c = build(&days);
        assert_eq!(c.bars.len(), 30);
        let last = &c.bars[29];
        assert_eq!(last.h, PLOT_H, "the largest day fills a 2-cent scale");
        assert!(last.today);
        assert_eq!(c.bars[1].h, 1, "a tiny spend still shows");
        assert_eq!(c.bars[0].h, 0);
        assert_eq!(c.grid[2].label.to_string(), "0.02");
        assert_eq!(c.grid[1].label.to_string(), "0.01");
        assert!(last.title.contains("2026-11-30: $0.02"));
        assert!(!c.empty);
        assert_eq!(c.x_labels.last().map(|l| l.text.as_str()), Some("11-30"));
        // The table has every day, in order, today last and marked.
        assert_eq!(c.days.len(), 30);
        assert_eq!(c.days[1].date, "2026-11-02");
        assert_eq!(c.days[1].spent, Usd::from_nanos(1));
        assert!(c.days[29].today && c.days.iter().filter(|d| d.today).count() == 1);
        for b in &c.bars {
            assert!(b.y >= TOP && b.y + b.h == c.baseline);
        }
    }

    #[test]
    fn empty_and_odd_inputs() {
        let c = build(&[]);
        assert!(c.empty && c.bars.is_empty() && c.days.is_empty());
        let c = build(&[day("x", -5), day("2026-01-01", i64::MAX)]);
        assert_eq!(c.bars[0].h, 0);
        assert_eq!(c.bars[1].h, PLOT_H);
    }
}
