//! What the SQL reporting functions show: images, libraries, the settings element by element,
//! and the problems found along the path (`check()`).

mod check;
mod images;
mod libraries;
mod settings;

pub use check::check;
pub use images::{ImageReport, image_reports};
pub use libraries::{LibraryReport, library_reports};
pub use settings::{CoreSetting, ElementOrigin, SettingRow, core_setting_rows, search_path_rows};

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub image: Option<PathBuf>,
    pub extension: Option<String>,
    pub message: String,
    pub hint: String,
}
