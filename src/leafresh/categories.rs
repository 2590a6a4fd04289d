//! The 8 challenge categories: the Korean label clients send and the English code the answer
//! carries (`close.data.challenges[].category`).

use serde::{Deserialize, Serialize};

use super::constants::constants;

/// One challenge category.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Category {
    /// Korean label, as the app shows and sends it (e.g. `디지털 탄소`).
    pub label: String,
    /// English code, as the answer carries it (e.g. `DIGITAL_CARBON`).
    pub code: String,
}

/// All categories, in the app's order.
pub fn all() -> &'static [Category] {
    &constants().categories
}

/// The category whose label is `label` (surrounding whitespace ignored, otherwise exact).
pub fn by_label(label: &str) -> Option<&'static Category> {
    let label = label.trim();
    all().iter().find(|c| c.label == label)
}

/// The category whose English code is `code` (exact).
pub fn by_code(code: &str) -> Option<&'static Category> {
    all().iter().find(|c| c.code == code)
}

/// The category of a session that no base-info call has set: 제로웨이스트.
pub fn default_category() -> &'static Category {
    // `constants()` asserts at load time that the default label names a category.
    by_label(&constants().default_category_label).expect("checked when constants load")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_maps_to_its_code() {
        let expected = [
            ("제로웨이스트", "ZERO_WASTE"),
            ("플로깅", "PLOGGING"),
            ("탄소발자국", "CARBON_FOOTPRINT"),
            ("에너지 절약", "ENERGY_SAVING"),
            ("업사이클", "UPCYCLING"),
            ("문화 공유", "MEDIA"),
            ("디지털 탄소", "DIGITAL_CARBON"),
            ("비건", "VEGAN"),
        ];
        assert_eq!(all().len(), expected.len());
        for (label, code) in expected {
            assert_eq!(by_label(label).map(|c| c.code.as_str()), Some(code));
            assert_eq!(by_code(code).map(|c| c.label.as_str()), Some(label));
        }
    }

    #[test]
    fn label_lookup_trims_but_is_otherwise_exact() {
        assert_eq!(by_label("  비건 ").unwrap().code, "VEGAN");
        assert!(by_label("에너지절약").is_none());
        assert!(by_label("vegan").is_none());
        assert!(by_label("VEGAN").is_none());
        assert!(by_label("").is_none());
    }

    #[test]
    fn default_is_zero_waste() {
        assert_eq!(default_category().code, "ZERO_WASTE");
        assert_eq!(default_category().label, "제로웨이스트");
    }
}
