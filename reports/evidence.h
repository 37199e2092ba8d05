// evidence.h: the manifest of the committed measurements (reports/baselines/
// MANIFEST.json) and docs/RESULTS.md generated from it. Every file under the evidence
// folder backs one claim; a claim names what it shows, the device, the date, the
// commit of the build and the command that produced its files. `moebench evidence
// check` holds the folder and the manifest to each other (no file left out, none
// missing, none listed twice, results files naming the claim's device); `moebench
// evidence write` renders the Markdown, with each results table produced from the
// results file itself (reports/fields.h columns), so the doc cannot drift from the data.
//
// Manifest (JSON):
//   {"schema_version": 1, "title": "...", "intro": ["markdown line", ...],
//    "claims": [{"id": "stages-gpu", "title": "...", "device": "NVIDIA H200",
//                "date": "2026-11-29", "commit": "b46151c", "command": "moebench run ...",
//                "text": ["markdown line", ...], "files": ["a.json", "b.log", "dir/"],
//                "tables": [{"file": "a.json", "columns": ["case", "stage", ...]}]}]}
// A "files" entry ending in '/' is a folder: everything under it belongs to the claim.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace moebench::reports {

struct Results;

struct EvidenceTable {
  std::string file;                  // a moebench results file of the claim
  std::vector<std::string> columns;  // summary column keys (reports/fields.h)
};

struct Claim {
  std::string id, title, device, date, commit, command;
  std::vector<std::string> text, files;
  std::vector<EvidenceTable> tables;
};

struct Manifest {
  std::string title;
  std::vector<std::string> intro;
  std::vector<Claim> claims;
};

// Parses MANIFEST.json; a malformed field is one Error naming the file, the field and
// what was expected.
Manifest load_manifest(const std::string& path);

// The problems between `dir` and its manifest, one line each (empty: consistent): files
// missing, stray or listed twice, a results file whose device is not its claim's. (The
// committed cases against their bounds: tests/bound_test.cpp.)
std::vector<std::string> check_evidence(const std::string& dir, const Manifest& m);

// docs/RESULTS.md: the title, the intro, a contents list, then per claim its title,
// text, provenance (device, date, commit, command), files (linked relative to
// `doc_to_dir`, the evidence folder as seen from the document) and tables. `prepare`
// (may be empty) sees each results file before its table is made: the caller re-derives
// bounds recorded by an older model of the limit there (suites/bound.h sits above reports).
using PrepareResults = std::function<void(Results&)>;
std::string render_evidence(const std::string& dir, const Manifest& m, const std::string& doc_to_dir,
                            const PrepareResults& prepare = {});

}  // namespace moebench::reports
