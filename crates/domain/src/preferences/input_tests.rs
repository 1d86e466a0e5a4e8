//! Tests of the preferences JSON format and its validation.
use super::*;

fn errors(body: Value) -> Vec<FieldError> {
    parse_preferences(&body).expect_err("must be refused")
}

fn one_error(body: Value) -> FieldError {
    let errs = errors(body);
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn a_full_set_parses_and_round_trips() {
    let body = json!({"preferences": [
        {"scope": "global", "title_template": "{{ course_code }} · {{ course_title }}"},
        {"scope": "exam", "color_id": 11,
         "reminders": {"overrides": [{"method": "popup", "minutes": 1440}, {"method": "email", "minutes": 0}]}},
        {"course_id": 12, "color_id": "5", "visibility": "private", "transparency": "transparent"},
        {"scope": "class", "course_id": 12, "reminders": {"use_default": true}},
        {"scope": "academic", "reminders": {"use_default": false, "overrides": []}}
    ]});
    let prefs = parse_preferences(&body).unwrap();
    assert_eq!(prefs.len(), 5);
    assert_eq!(prefs[2].scope, Scope::Global);
    assert_eq!(prefs[2].fields.color_id, Some(5));
    assert_eq!(
        prefs[4].fields.reminders,
        Some(Reminders::Overrides(vec![]))
    );
    let again = parse_preferences(&to_json(&prefs)).unwrap();
    assert_eq!(again, prefs);
    // A bare list is the same.
    assert_eq!(parse_preferences(&body["preferences"]).unwrap(), prefs);
}

#[test]
fn each_bad_field_gets_its_own_message() {
    let cases = [
        (
            json!({"scope": "weekly", "color_id": 1}),
            "preferences[0].scope",
            "must be",
        ),
        (
            json!({"scope": "exam", "course_id": -3, "color_id": 1}),
            "preferences[0].course_id",
            "positive",
        ),
        (
            json!({"scope": "academic", "course_id": 3, "color_id": 1}),
            "preferences[0].course_id",
            "no course",
        ),
        (json!({"color_id": 0}), "preferences[0].color_id", "1 to 11"),
        (
            json!({"color_id": 12}),
            "preferences[0].color_id",
            "1 to 11",
        ),
        (
            json!({"color_id": "red"}),
            "preferences[0].color_id",
            "1 to 11",
        ),
        (
            json!({"visibility": "confidential"}),
            "preferences[0].visibility",
            "private",
        ),
        (
            json!({"transparency": "busy"}),
            "preferences[0].transparency",
            "opaque",
        ),
        (
            json!({"title_template": 5}),
            "preferences[0].title_template",
            "string",
        ),
        (
            json!({"title_template": "{{ nope }}"}),
            "preferences[0].title_template",
            "unknown variable `nope`",
        ),
        (
            json!({"title_template": "{% if %}"}),
            "preferences[0].title_template",
            "syntax error",
        ),
        (
            json!({"description_template": "{% include 'x' %}"}),
            "preferences[0].description_template",
            "`{% include %}` is not allowed",
        ),
        (
            json!({"location_template": "x".repeat(301)}),
            "preferences[0].location_template",
            "at most 300",
        ),
        (
            json!({"colour_id": 3}),
            "preferences[0].colour_id",
            "unknown field",
        ),
        (
            json!({"scope": "exam"}),
            "preferences[0]",
            "sets no preference",
        ),
        (json!("exam"), "preferences[0]", "must be an object"),
        (
            json!({"reminders": {"overrides": [{"method": "sms", "minutes": 5}]}}),
            "preferences[0].reminders",
            "reminder 1: method",
        ),
        (
            json!({"reminders": {"overrides": [{"method": "popup", "minutes": 40321}]}}),
            "preferences[0].reminders",
            "0 to 40320",
        ),
        (
            json!({"reminders": {"overrides": [{"method": "popup", "minutes": -1}]}}),
            "preferences[0].reminders",
            "0 to 40320",
        ),
        (
            json!({"reminders": {"overrides": [{"method": "popup", "minutes": 1.5}]}}),
            "preferences[0].reminders",
            "whole number",
        ),
        (
            json!({"reminders": {"overrides": [{"method": "popup", "minutes": 1}, {"method": "popup", "minutes": 2}, {"method": "popup", "minutes": 3}, {"method": "popup", "minutes": 4}, {"method": "popup", "minutes": 5}, {"method": "popup", "minutes": 6}]}}),
            "preferences[0].reminders",
            "at most 5",
        ),
        (
            json!({"reminders": {"use_default": true, "overrides": [{"method": "popup", "minutes": 1}]}}),
            "preferences[0].reminders",
            "cannot be combined",
        ),
        (
            json!({"reminders": {}}),
            "preferences[0].reminders",
            "must be",
        ),
        (
            json!({"reminders": "use_default"}),
            "preferences[0].reminders",
            "must be",
        ),
    ];
    for (row, field, needle) in cases {
        let e = one_error(json!({ "preferences": [row] }));
        assert_eq!(e.field, field, "{row}: {e}");
        assert!(e.message.contains(needle), "{row}: {e}");
    }
}

#[test]
fn several_errors_are_reported_together_and_duplicates_refused() {
    let errs = errors(json!([
        {"color_id": 99, "visibility": "nope"},
        {"scope": "exam", "color_id": 3},
        {"scope": "exam", "color_id": 4}
    ]));
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "preferences[0].color_id",
            "preferences[0].visibility",
            "preferences[2]"
        ]
    );
    assert!(errs[2].message.contains("second row for exam"));
    let e = one_error(json!({"prefs": []}));
    assert_eq!(e.field, "prefs");
    assert!(parse_preferences(&json!(42)).is_err());
    let too_many: Vec<Value> = (1..=51)
        .map(|c| json!({"course_id": c, "color_id": 1}))
        .collect();
    let e = one_error(json!(too_many));
    assert_eq!(e.field, "preferences");
    assert!(e.message.contains("at most 50 rows"), "{e}");
    assert!(
        parse_preferences(&json!({"preferences": []}))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn templates_are_tried_on_the_kinds_the_row_applies_to() {
    // A hostile template is refused when saved.
    let e = one_error(json!([{ "scope": "class",
        "title_template": "{% for a in course_title %}{% for b in course_title %}{% for c in course_title %}{% for d in course_title %}{% for e in course_title %}x{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}" }]));
    assert_eq!(e.field, "preferences[0].title_template");
    assert!(
        e.message.contains("more work") || e.message.contains("more than"),
        "{e}"
    );
}
