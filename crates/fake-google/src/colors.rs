//! colors.get: Google's fixed calendar and event color palettes.
//!
//! Followed: Google Calendar API reference "Colors" (`calendar#colors`: `calendar` and
//! `event` maps from color id to `{background, foreground}`; an event's `colorId` refers to
//! the `event` palette, a calendar list entry's to the `calendar` palette) and "Colors: get"
//! (`GET /calendar/v3/colors`). The palette values are the ones Google serves.

use serde_json::{Map, Value, json};

/// Event palette, ids "1" to "11" (Lavender, Sage, Grape, Flamingo, Banana, Tangerine,
/// Peacock, Graphite, Blueberry, Basil, Tomato).
const EVENT_BACKGROUNDS: [&str; 11] = [
    "#a4bdfc", "#7ae7bf", "#dbadff", "#ff887c", "#fbd75b", "#ffb878", "#46d6db", "#e1e1e1",
    "#5484ed", "#51b749", "#dc2127",
];

/// Calendar palette, ids "1" to "24".
const CALENDAR_BACKGROUNDS: [&str; 24] = [
    "#ac725e", "#d06b64", "#f83a22", "#fa573c", "#ff7537", "#ffad46", "#42d692", "#16a765",
    "#7bd148", "#b3dc6c", "#fbe983", "#fad165", "#92e1c0", "#9fe1e7", "#9fc6e7", "#4986e7",
    "#9a9cff", "#b99aff", "#c2c2c2", "#cabdbf", "#cca6ac", "#f691b2", "#cd74e6", "#a47ae2",
];

/// Foreground used with every palette entry.
const FOREGROUND: &str = "#1d1d1d";

/// Whether `id` is a valid event `colorId` ("1" to "11", no leading zeros or signs).
pub(crate) fn is_event_color(id: &str) -> bool {
    id.parse::<usize>()
        .is_ok_and(|n| (1..=EVENT_BACKGROUNDS.len()).contains(&n) && n.to_string() == id)
}

fn palette(backgrounds: &[&str]) -> Value {
    let map: Map<String, Value> = backgrounds
        .iter()
        .enumerate()
        .map(|(i, bg)| {
            (
                (i + 1).to_string(),
                json!({ "background": bg, "foreground": FOREGROUND }),
            )
        })
        .collect();
    Value::Object(map)
}

/// The `calendar#colors` resource.
pub(crate) fn colors() -> Value {
    json!({
        "kind": "calendar#colors",
        "updated": "2012-02-14T00:00:00.000Z",
        "calendar": palette(&CALENDAR_BACKGROUNDS),
        "event": palette(&EVENT_BACKGROUNDS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids() {
        assert!(is_event_color("1") && is_event_color("11"));
        for bad in ["0", "12", "01", "+1", "", "x"] {
            assert!(!is_event_color(bad), "{bad}");
        }
        let c = colors();
        assert_eq!(c["event"].as_object().map(Map::len), Some(11));
        assert_eq!(c["calendar"].as_object().map(Map::len), Some(24));
        assert_eq!(c["event"]["11"]["background"], "#dc2127");
    }
}
