//! `libraries()`: every shared object in the images, with where each need resolves.

use std::path::PathBuf;

use super::images::file_names;
use crate::dependencies::{LibraryContext, Resolution, plan};
use crate::elf::{HOST_MACHINE, machine_name, read_elf};
use crate::index::{Image, Index};

#[derive(Debug, Clone, PartialEq)]
pub struct LibraryReport {
    pub path: PathBuf,
    pub image: PathBuf,
    pub prefix: PathBuf,
    /// `module` (exports Pg_magic_func), `library`, or `unreadable`.
    pub kind: &'static str,
    pub soname: Option<String>,
    pub pg_major: Option<u32>,
    pub machine: Option<String>,
    pub foreign_machine: bool,
    /// Direct `DT_NEEDED` entries and, in the same order, where each resolves.
    pub needed: Vec<String>,
    pub resolved: Vec<String>,
    pub missing: Vec<String>,
    pub error: Option<String>,
    /// For files in `lib/`: the copy PostgreSQL loads for this file name.
    pub winner: bool,
}

/// Every shared object in every image's `lib/` and `system/` (names containing `.so`).
pub fn library_reports(index: &Index, ctx: &LibraryContext) -> Vec<LibraryReport> {
    let mut reports = Vec::new();
    for image in &index.images {
        for dir in image.library_dirs() {
            for name in file_names(&dir).into_iter().filter(|n| n.contains(".so")) {
                let path = dir.join(&name);
                let winner = index.library_winners().any(|l| l.path == path);
                reports.push(library_report(path, image, ctx, winner));
            }
        }
    }
    reports
}

fn library_report(path: PathBuf, image: &Image, ctx: &LibraryContext, winner: bool) -> LibraryReport {
    let mut report = LibraryReport {
        path: path.clone(),
        image: image.dir.clone(),
        prefix: image.prefix.clone(),
        kind: "unreadable",
        soname: None,
        pg_major: None,
        machine: None,
        foreign_machine: false,
        needed: Vec::new(),
        resolved: Vec::new(),
        missing: Vec::new(),
        error: None,
        winner,
    };
    let info = match read_elf(&path) {
        Ok(info) => info,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.kind = if info.is_pg_module { "module" } else { "library" };
    report.soname = info.soname.clone();
    report.pg_major = info.pg_major;
    report.machine = Some(machine_name(info.machine));
    report.foreign_machine = info.machine != HOST_MACHINE;
    match plan(&path, ctx) {
        Ok(plan) => {
            for dep in plan.dependencies.iter().filter(|d| d.needed_by == path) {
                report.needed.push(dep.soname.clone());
                report.resolved.push(match &dep.resolution {
                    Resolution::Loaded | Resolution::NotFound => dep.resolution.kind().to_string(),
                    other => format!(
                        "{} ({})",
                        other.path().map(|p| p.display().to_string()).unwrap_or_default(),
                        other.kind()
                    ),
                });
            }
            report.missing = plan.missing().map(|d| d.soname.clone()).collect();
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}
