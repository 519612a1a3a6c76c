//! [`LineRanges`]: which lines an archive holds, as inclusive ranges, so that the rows
//! those lines came from can be deleted after the archive is verified.

/// A set of line numbers kept as sorted, disjoint, non-adjacent inclusive ranges.
///
/// A step's lines are nearly always `0..n`, so an archive of millions of lines is one
/// range: this is what [`super::TableStaging::delete_lines`] deletes by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineRanges {
    ranges: Vec<(i64, i64)>,
}

impl LineRanges {
    /// No lines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a line. Ascending lines (the order reads give) extend the last range in
    /// constant time; any other order is merged in place.
    pub fn insert(&mut self, line: i64) {
        if let Some(last) = self.ranges.last_mut() {
            if line >= last.0 && line <= last.1 {
                return;
            }
            if last.1 != i64::MAX && line == last.1 + 1 {
                last.1 = line;
                return;
            }
            if line > last.1 {
                self.ranges.push((line, line));
                return;
            }
        } else {
            self.ranges.push((line, line));
            return;
        }
        // Out of order: the first range ending at or after `line - 1`.
        let at = self
            .ranges
            .partition_point(|&(_, end)| end < line.saturating_sub(1));
        let (start, end) = self.ranges[at];
        if line >= start && line <= end {
            return;
        }
        if line == end.saturating_add(1) {
            self.ranges[at].1 = line;
            // It may now touch the next range.
            if self
                .ranges
                .get(at + 1)
                .is_some_and(|next| next.0 == line.saturating_add(1))
            {
                self.ranges[at].1 = self.ranges[at + 1].1;
                self.ranges.remove(at + 1);
            }
        } else if line == start.saturating_sub(1) {
            self.ranges[at].0 = line;
        } else {
            self.ranges.insert(at, (line, line));
        }
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    /// How many lines.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| end.abs_diff(start) + 1)
            .sum()
    }

    /// Whether there is no line.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges cut into pieces of at most `lines` lines each (at least 1): one delete
    /// statement each.
    pub fn chunks(&self, lines: u64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let step = lines.max(1);
        self.ranges.iter().flat_map(move |&(start, end)| {
            let mut next = Some(start);
            std::iter::from_fn(move || {
                let from = next?;
                let to = from.saturating_add_unsigned(step - 1).min(end);
                next = (to < end).then(|| to + 1);
                Some((from, to))
            })
        })
    }
}

impl FromIterator<i64> for LineRanges {
    fn from_iter<I: IntoIterator<Item = i64>>(lines: I) -> Self {
        let mut set = Self::new();
        for line in lines {
            set.insert(line);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascending_lines_make_one_range() {
        let set: LineRanges = (0..1_000_000).collect();
        assert_eq!(set.ranges(), &[(0, 999_999)]);
        assert_eq!(set.len(), 1_000_000);
    }

    #[test]
    fn any_order_gives_the_same_set() {
        let lines = [5, 1, 3, 2, 9, 4, 0, 7, 3, -2, 8, i64::MAX, i64::MIN];
        let set: LineRanges = lines.into_iter().collect();
        assert_eq!(
            set.ranges(),
            &[
                (i64::MIN, i64::MIN),
                (-2, -2),
                (0, 5),
                (7, 9),
                (i64::MAX, i64::MAX)
            ]
        );
        let mut sorted = lines.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(set.len(), sorted.len() as u64);
    }

    #[test]
    fn filling_a_gap_joins_the_ranges() {
        let set: LineRanges = [0, 1, 3, 4, 2].into_iter().collect();
        assert_eq!(set.ranges(), &[(0, 4)]);
    }

    #[test]
    fn chunks_cover_every_line_once() {
        let set: LineRanges = (0..10).chain(20..23).collect();
        let chunks: Vec<_> = set.chunks(4).collect();
        assert_eq!(chunks, [(0, 3), (4, 7), (8, 9), (20, 22)]);
        let max: LineRanges = [i64::MAX - 1, i64::MAX].into_iter().collect();
        assert_eq!(
            max.chunks(1).collect::<Vec<_>>(),
            [(i64::MAX - 1, i64::MAX - 1), (i64::MAX, i64::MAX)]
        );
        assert_eq!(max.chunks(0).count(), 2);
    }
}
