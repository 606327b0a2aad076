/// `expected_status` parsed: comma-separated codes and inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    /// `"200-399"`, `"200,204"`, `"200, 300-302"`; codes within 100..=599.
    pub fn parse(text: &str) -> Option<Self> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let code = part.parse().ok()?;
                    (code, code)
                }
            };
            if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
                return None;
            }
            ranges.push((lo, hi));
        }
        Some(Self(ranges))
    }

    /// 200-399: the default `expected_status`.
    pub fn success() -> Self {
        Self(vec![(200, 399)])
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}
