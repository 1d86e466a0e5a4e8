//! The template sandbox of calendar preferences: minijinja, locked down.
//!
//! A student's title, description and location templates are untrusted text that runs
//! inside the sync. The sandbox makes that safe:
//!
//! * **Nothing to reach.** The environment is empty: no loader (so nothing can be
//!   included, imported or extended — minijinja is built without `multi_template` and
//!   `macros`, and those statements are refused by name before parsing), no globals or
//!   functions (`range`, `namespace`, … do not exist), only a short list of pure text
//!   filters, and only the variables of [`VARIABLES`], all plain strings. Auto-escaping
//!   is off: the output is plain text for Google, never HTML.
//! * **Bounded work.** Every render gets [`FUEL`] units of minijinja fuel, which pays
//!   for instructions *and* for every byte a template produces or copies (loops,
//!   string repetition, `replace`…): a hostile template runs out of fuel within a
//!   bounded number of steps and bytes. The output is written to a writer that stops
//!   at the field's limit ([`TemplateField::max_output_chars`]), and the recursion
//!   limit is [`RECURSION_LIMIT`]. The source itself is limited in length
//!   ([`TemplateField::max_source_chars`]) and parsing depth (minijinja's parser).
//! * **Checked when saved, again when rendered.** [`validate`] (used by the API and the
//!   CLI) refuses a template that is too long, uses a disallowed statement, does not
//!   parse, names a variable that does not exist, or fails on sample data, with a
//!   message naming the problem. At sync time [`Sandbox::compile`] repeats the static
//!   checks (rows written with plain SQL skip the API) and a render can still fail on
//!   real data: the caller then falls back to the built-in text (see
//!   [`crate::render`]); a template never fails a sync.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, ErrorKind, Template, UndefinedBehavior, Value};
use serde::Serialize;

use crate::events::EventKind;

/// Fuel for one render (minijinja charges one unit per instruction and one per 64
/// bytes produced): about 20,000 steps or 1.3 MB of data, far beyond any real title
/// and far below anything that could slow a worker.
pub const FUEL: u64 = 20_000;

/// Nesting limit for `if`/`for` at render time.
pub const RECURSION_LIMIT: usize = 32;

/// Statements that reach other templates or define callable code: refused by name.
const DISALLOWED_STATEMENTS: [&str; 7] = [
    "include", "import", "from", "extends", "block", "macro", "call",
];

/// The text fields a template can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateField {
    /// The event's summary (`title_template`).
    Title,
    /// The event's description (`description_template`).
    Description,
    /// The event's location (`location_template`).
    Location,
}

impl TemplateField {
    /// Every field.
    pub const ALL: [TemplateField; 3] = [
        TemplateField::Title,
        TemplateField::Description,
        TemplateField::Location,
    ];

    /// `title`, `description`, `location`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateField::Title => "title",
            TemplateField::Description => "description",
            TemplateField::Location => "location",
        }
    }

    /// The preference column holding the template.
    pub fn column(self) -> &'static str {
        match self {
            TemplateField::Title => "title_template",
            TemplateField::Description => "description_template",
            TemplateField::Location => "location_template",
        }
    }

    /// The longest template source, in characters (the database CHECKs the same).
    pub fn max_source_chars(self) -> usize {
        match self {
            TemplateField::Title | TemplateField::Location => 300,
            TemplateField::Description => 2000,
        }
    }

    /// The longest rendered text, in characters.
    pub fn max_output_chars(self) -> usize {
        match self {
            TemplateField::Title | TemplateField::Location => 500,
            TemplateField::Description => 4000,
        }
    }
}

/// One template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: &'static str,
    /// What it holds, for the docs, the CLI and error messages.
    pub meaning: &'static str,
}

const fn var(name: &'static str, meaning: &'static str) -> Variable {
    Variable { name, meaning }
}

/// The allow-list: every variable a template may use. Every variable is defined for
/// every kind of event, empty where it does not apply (a class has no `exam_date`, an
/// academic-calendar day has no course), so `{% if room %}…{% endif %}` works
/// everywhere. Values are plain strings.
pub const VARIABLES: [Variable; 22] = [
    var("kind", "class, exam or academic"),
    var("course_title", "the course title, e.g. Calculus I"),
    var(
        "course_code",
        "subject, number and section, e.g. MATH 1750-01",
    ),
    var("subject", "e.g. MATH"),
    var("course_number", "e.g. 1750"),
    var("section_number", "e.g. 01"),
    var(
        "room",
        "the room number, e.g. 101 (empty when none or to be determined)",
    ),
    var(
        "building",
        "the building, e.g. Smith Hall (empty when none or to be determined)",
    ),
    var(
        "location",
        "the built-in location: building and room, or TBD (empty for academic days)",
    ),
    var(
        "day",
        "the weekday, e.g. Monday (the class's, the exam's, an academic day's first)",
    ),
    var(
        "start_time",
        "the local start time, 24-hour, e.g. 09:00 (classes and exams)",
    ),
    var(
        "end_time",
        "the local end time, 24-hour, e.g. 10:15 (classes and exams)",
    ),
    var(
        "start_date",
        "the first day, e.g. 2026-08-31 (a class's first meeting, the exam's day, an academic day)",
    ),
    var(
        "end_date",
        "the last day, e.g. 2026-12-11 (a class's last possible meeting, the exam's day, an academic day)",
    ),
    var("exam_date", "the exam's date, e.g. 2026-12-14 (exams only)"),
    var(
        "exam_time",
        "the exam's start and end, e.g. 09:00–12:00 (exams only)",
    ),
    var(
        "event_title",
        "the academic calendar entry's title, e.g. Thanksgiving break (academic only)",
    ),
    var(
        "category",
        "the academic calendar entry's category, e.g. Holiday (academic only)",
    ),
    var(
        "no_classes",
        "\"yes\" when the academic day cancels classes, else empty (academic only)",
    ),
    var("default_title", "the built-in title of the event"),
    var(
        "default_description",
        "the built-in description of the event",
    ),
    var("default_location", "the built-in location of the event"),
];

/// Whether `name` is an allowed variable.
pub fn is_variable(name: &str) -> bool {
    VARIABLES.iter().any(|v| v.name == name)
}

/// The filters a template may use (pure text functions; `default`/`d` for empties).
pub const FILTERS: [&str; 11] = [
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "replace",
    "default",
    "d",
    "length",
    "first",
    "last",
];

/// The values of the variables for one event (every name of [`VARIABLES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateVars(BTreeMap<&'static str, String>);

impl TemplateVars {
    /// Every variable empty.
    pub fn empty() -> TemplateVars {
        TemplateVars(VARIABLES.iter().map(|v| (v.name, String::new())).collect())
    }

    /// Set `name` (must be one of [`VARIABLES`]).
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut TemplateVars {
        debug_assert!(is_variable(name), "{name} is not an allowed variable");
        self.0.insert(name, value.into());
        self
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Plausible values for an event of `kind`, for trial renders when a template is
    /// saved.
    pub fn sample(kind: EventKind) -> TemplateVars {
        let mut v = TemplateVars::empty();
        v.set("kind", kind.as_str());
        match kind {
            EventKind::Class | EventKind::Exam => {
                v.set("course_title", "Calculus I")
                    .set("course_code", "MATH 1750-01")
                    .set("subject", "MATH")
                    .set("course_number", "1750")
                    .set("section_number", "01")
                    .set("room", "101")
                    .set("building", "Smith Hall")
                    .set("location", "Smith Hall 101")
                    .set("default_location", "Smith Hall 101");
                if kind == EventKind::Class {
                    v.set("day", "Monday")
                        .set("start_time", "09:00")
                        .set("end_time", "09:50")
                        .set("start_date", "2026-08-31")
                        .set("end_date", "2026-12-11")
                        .set("default_title", "Calculus I")
                        .set("default_description", "MATH-1750-01");
                } else {
                    v.set("day", "Monday")
                        .set("start_time", "09:00")
                        .set("end_time", "12:00")
                        .set("start_date", "2026-12-14")
                        .set("end_date", "2026-12-14")
                        .set("exam_date", "2026-12-14")
                        .set("exam_time", "09:00–12:00")
                        .set("default_title", "Final exam: Calculus I")
                        .set("default_description", "MATH-1750-01 final exam");
                }
            }
            EventKind::Academic => {
                v.set("day", "Wednesday")
                    .set("start_date", "2026-11-25")
                    .set("end_date", "2026-11-27")
                    .set("event_title", "Thanksgiving break")
                    .set("category", "Break")
                    .set("no_classes", "yes")
                    .set("default_title", "Thanksgiving break")
                    .set("default_description", "Break (no classes)");
            }
        }
        v
    }

    fn to_value(&self) -> Value {
        Value::from(
            self.0
                .iter()
                .map(|(k, v)| (*k, Value::from(v.as_str())))
                .collect::<BTreeMap<&str, Value>>(),
        )
    }
}

/// Why a template is refused or could not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error(
        "`{{% {0} %}}` is not allowed: templates cannot include, import or extend other templates or define blocks or macros"
    )]
    Disallowed(String),
    #[error("contains a NUL character")]
    NulCharacter,
    #[error("syntax error{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Syntax {
        message: String,
        line: Option<usize>,
    },
    #[error("unknown variable `{name}` (allowed: {allowed})")]
    UnknownVariable { name: String, allowed: String },
    #[error("renders more than {max} characters")]
    OutputTooLong { max: usize },
    #[error(
        "needs more work than a template may do (its loops or text grow too large for the sandbox)"
    )]
    OutOfFuel,
    #[error("fails to render{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Render {
        message: String,
        line: Option<usize>,
    },
}

/// A statement tag `{% name …` in `source` whose name is disallowed.
fn disallowed_statement(source: &str) -> Option<&'static str> {
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        rest = &rest[at + 2..];
        let body = rest.trim_start_matches(['-', '+', '~']).trim_start();
        let word: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(bad) = DISALLOWED_STATEMENTS.iter().find(|d| **d == word) {
            return Some(bad);
        }
    }
    None
}

fn message_of(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The sandboxed environment. Cheap to build (an empty environment and a few
/// filters); templates borrow their source for `'s`.
pub struct Sandbox<'s> {
    env: Environment<'s>,
}

impl Default for Sandbox<'_> {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl<'s> Sandbox<'s> {
    /// The locked-down environment described in the module docs.
    pub fn new() -> Sandbox<'s> {
        use minijinja::filters;
        let mut env = Environment::empty();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.add_filter("upper", filters::upper);
        env.add_filter("lower", filters::lower);
        env.add_filter("title", filters::title);
        env.add_filter("capitalize", filters::capitalize);
        env.add_filter("trim", filters::trim);
        env.add_filter("replace", filters::replace);
        env.add_filter("default", filters::default);
        env.add_filter("d", filters::default);
        env.add_filter("length", filters::length);
        env.add_filter("first", filters::first);
        env.add_filter("last", filters::last);
        Sandbox { env }
    }

    /// The static checks (length, disallowed statements, syntax, allowed variables)
    /// and the compiled template.
    pub fn compile(
        &self,
        field: TemplateField,
        source: &'s str,
    ) -> Result<Template<'_, 's>, TemplateError> {
        let len = source.chars().count();
        if len > field.max_source_chars() {
            return Err(TemplateError::TooLong {
                len,
                max: field.max_source_chars(),
            });
        }
        if source.contains('\0') {
            return Err(TemplateError::NulCharacter);
        }
        if let Some(bad) = disallowed_statement(source) {
            return Err(TemplateError::Disallowed(bad.to_string()));
        }
        let tmpl = self
            .env
            .template_from_str(source)
            .map_err(|e| TemplateError::Syntax {
                message: e.detail().unwrap_or("invalid template").to_string(),
                line: e.line(),
            })?;
        let unknown: BTreeSet<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !is_variable(name))
            .collect();
        if let Some(name) = unknown.into_iter().next() {
            return Err(TemplateError::UnknownVariable {
                name,
                allowed: VARIABLES
                    .iter()
                    .map(|v| v.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(tmpl)
    }

    /// Render a compiled template for one event's variables, within the fuel and the
    /// field's output limit. The result is trimmed.
    pub fn render(
        &self,
        tmpl: &Template<'_, 's>,
        field: TemplateField,
        vars: &TemplateVars,
    ) -> Result<String, TemplateError> {
        let max = field.max_output_chars();
        let mut out = CappedWriter::new(max);
        match tmpl.render_captured_to(vars.to_value(), &mut out) {
            Ok(_) => {}
            Err(_) if out.overflowed => return Err(TemplateError::OutputTooLong { max }),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => return Err(TemplateError::OutOfFuel),
            Err(e) => {
                return Err(TemplateError::Render {
                    message: message_of(&e),
                    line: e.line(),
                });
            }
        }
        let text = String::from_utf8(out.buf).map_err(|_| TemplateError::Render {
            message: "the output is not valid UTF-8".into(),
            line: None,
        })?;
        Ok(text.trim().to_string())
    }
}

/// Validate a template as it is saved: the static checks, then a trial render on
/// sample data of every kind of event the preference applies to. The error names the
/// problem (it is shown to the student as is).
pub fn validate(
    field: TemplateField,
    source: &str,
    kinds: &[EventKind],
) -> Result<(), TemplateError> {
    let sandbox = Sandbox::new();
    let tmpl = sandbox.compile(field, source)?;
    for kind in kinds {
        sandbox.render(&tmpl, field, &TemplateVars::sample(*kind))?;
    }
    Ok(())
}

/// An `io::Write` that keeps at most `max` characters and fails past them, so an
/// oversized render stops at the limit instead of growing.
struct CappedWriter {
    buf: Vec<u8>,
    chars: usize,
    max: usize,
    overflowed: bool,
}

impl CappedWriter {
    fn new(max: usize) -> CappedWriter {
        CappedWriter {
            buf: Vec::new(),
            chars: 0,
            max,
            overflowed: false,
        }
    }
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Characters are the bytes that do not continue a UTF-8 sequence.
        let chars = data.iter().filter(|b| (**b & 0xC0) != 0x80).count();
        if self.chars + chars > self.max {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit reached"));
        }
        self.chars += chars;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
