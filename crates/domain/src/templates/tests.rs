//! Tests of the template sandbox.
use super::*;
use std::time::Instant;

const ALL_KINDS: [EventKind; 3] = [EventKind::Class, EventKind::Exam, EventKind::Academic];

fn title(source: &str) -> Result<String, TemplateError> {
    let sandbox = Sandbox::new();
    let tmpl = sandbox.compile(TemplateField::Title, source)?;
    sandbox.render(
        &tmpl,
        TemplateField::Title,
        &TemplateVars::sample(EventKind::Class),
    )
}

#[test]
fn renders_allowed_variables_and_filters_as_plain_text() {
    assert_eq!(
        title("{{ course_code }} · {{ course_title }}").unwrap(),
        "MATH 1750-01 · Calculus I"
    );
    assert_eq!(
        title("{{ subject|lower }} {% if room %}in {{ room }}{% endif %}").unwrap(),
        "math in 101"
    );
    // No HTML escaping: the output is plain text for Google.
    assert_eq!(title("<b>{{ 'a&b' }}</b>").unwrap(), "<b>a&b</b>");
    assert_eq!(
        title("{{ exam_date|default('no exam', true) }}").unwrap(),
        "no exam"
    );
}

#[test]
fn every_variable_is_defined_for_every_kind() {
    let source: String = VARIABLES
        .iter()
        .map(|v| format!("{{{{ {} }}}}", v.name))
        .collect();
    validate(TemplateField::Description, &source, &ALL_KINDS).unwrap();
}

#[test]
fn unknown_variables_and_functions_are_named() {
    let err = title("{{ course_titel }}").unwrap_err();
    assert!(
        matches!(&err, TemplateError::UnknownVariable { name, .. } if name == "course_titel"),
        "{err}"
    );
    assert!(err.to_string().contains("unknown variable `course_titel`"));
    // There are no functions: range() is an unknown name.
    let err = title("{% for i in range(10) %}x{% endfor %}").unwrap_err();
    assert!(err.to_string().contains("`range`"), "{err}");
}

#[test]
fn syntax_errors_say_where() {
    let err = title("Hello\n{{ course_title ").unwrap_err();
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn includes_imports_extends_macros_are_refused_by_name() {
    for (source, name) in [
        ("{% include 'x' %}", "include"),
        ("{% import 'x' as y %}", "import"),
        ("{% from 'x' import y %}", "from"),
        ("{% extends 'x' %}", "extends"),
        ("{% block b %}{% endblock %}", "block"),
        ("{%- macro m() %}x{% endmacro %}", "macro"),
        ("{% call m() %}{% endcall %}", "call"),
    ] {
        let err = title(source).unwrap_err();
        assert_eq!(err, TemplateError::Disallowed(name.into()), "{source}");
        assert!(err.to_string().contains(&format!("`{{% {name} %}}`")));
    }
}

#[test]
fn too_long_sources_are_refused() {
    let err = title(&"x".repeat(301)).unwrap_err();
    assert_eq!(err, TemplateError::TooLong { len: 301, max: 300 });
    validate(TemplateField::Description, &"x".repeat(2000), &ALL_KINDS).unwrap();
}

#[test]
fn strict_undefined_attribute_fails_to_render() {
    let err = validate(
        TemplateField::Title,
        "{{ course_title.upper }}",
        &[EventKind::Class],
    )
    .unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
}

/// Hostile templates: each is refused within the sandbox's budget, quickly, and
/// without allocating what it asks for.
#[test]
fn hostile_templates_are_refused_or_capped() {
    let loops = "{% for a in course_title %}{% for b in course_title %}{% for c in course_title %}\
                 {% for d in course_title %}{% for e in course_title %}x{% endfor %}{% endfor %}\
                 {% endfor %}{% endfor %}{% endfor %}";
    type Expect = fn(&TemplateError) -> bool;
    let cases: Vec<(&str, String, Expect)> = vec![
        // 10^5 iterations: out of fuel (or past the output limit first).
        ("huge loop", loops.to_string(), |e| {
            matches!(
                e,
                TemplateError::OutOfFuel | TemplateError::OutputTooLong { .. }
            )
        }),
        // A loop with no output at all still runs out of fuel.
        ("silent loop", loops.replace('x', ""), |e| {
            matches!(e, TemplateError::OutOfFuel)
        }),
        // 1 MB in one expression.
        ("1 MB output", "{{ 'x' * 1000000 }}".to_string(), |e| {
            matches!(
                e,
                TemplateError::OutOfFuel | TemplateError::OutputTooLong { .. }
            )
        }),
        // A 100 MB string kept in a variable is never allocated.
        (
            "big value",
            "{% set s = 'x' * 100000000 %}{{ s|length }}".to_string(),
            |e| matches!(e, TemplateError::OutOfFuel),
        ),
        // Doubling a string 40 times.
        (
            "doubling",
            format!(
                "{{% set s = course_title %}}{}{{{{ s|length }}}}",
                "{% set s = s ~ s %}".repeat(40)
            ),
            |e| matches!(e, TemplateError::OutOfFuel),
        ),
        // replace() multiplying its input.
        (
            "replace bomb",
            format!(
                "{{{{ course_title{} }}}}",
                "|replace('', course_title)".repeat(6)
            ),
            |e| {
                matches!(
                    e,
                    TemplateError::OutOfFuel | TemplateError::OutputTooLong { .. }
                )
            },
        ),
        // Deep nesting of loops: refused by the runtime's recursion limit.
        (
            "deep loops",
            format!(
                "{}x{}",
                "{% for a in 'x' %}".repeat(40),
                "{% endfor %}".repeat(40)
            ),
            |e| matches!(e, TemplateError::Render { message, .. } if message.contains("recursion")),
        ),
        (
            "deep parentheses",
            format!("{{{{ {}1{} }}}}", "(".repeat(290), ")".repeat(290)),
            |e| {
                matches!(
                    e,
                    TemplateError::Syntax { .. } | TemplateError::TooLong { .. }
                )
            },
        ),
    ];
    for (name, source, expected) in cases {
        let field = TemplateField::Description;
        let started = Instant::now();
        let err = validate(field, &source, &ALL_KINDS).expect_err(name);
        let took = started.elapsed();
        assert!(expected(&err), "{name}: unexpected error {err:?}");
        // Not a timing assertion: printed so the bound can be read in test logs.
        println!("{name}: refused in {took:?}: {err}");
    }
}

#[test]
fn output_is_capped_per_field() {
    let sandbox = Sandbox::new();
    let source = "{{ course_title * 60 }}"; // 600 characters
    let tmpl = sandbox.compile(TemplateField::Title, source).unwrap();
    let vars = TemplateVars::sample(EventKind::Class);
    assert_eq!(
        sandbox.render(&tmpl, TemplateField::Title, &vars),
        Err(TemplateError::OutputTooLong { max: 500 })
    );
    let tmpl = sandbox.compile(TemplateField::Description, source).unwrap();
    assert_eq!(
        sandbox
            .render(&tmpl, TemplateField::Description, &vars)
            .unwrap()
            .chars()
            .count(),
        600
    );
    // Multi-byte characters count once.
    let tmpl = sandbox
        .compile(TemplateField::Title, "{{ '·' * 500 }}")
        .unwrap();
    assert_eq!(
        sandbox
            .render(&tmpl, TemplateField::Title, &vars)
            .unwrap()
            .chars()
            .count(),
        500
    );
}
