// evidence.cpp: see evidence.h.
#include "reports/evidence.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "common/error.h"
#include "reports/fields.h"
#include "reports/markdown.h"
#include "reports/results.h"

namespace moebench::reports {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kManifestVersion = 1;

std::string str_field(const json& j, const std::string& where, const char* key) {
  if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty())
    fail("{}: field '{}' is {}, expected a non-empty string", where, key, j.contains(key) ? j[key].dump() : "missing");
  return j[key].get<std::string>();
}

std::vector<std::string> lines_field(const json& j, const std::string& where, const char* key, bool required) {
  if (!j.contains(key)) {
    if (required) fail("{}: field '{}' is missing, expected an array of strings", where, key);
    return {};
  }
  if (!j[key].is_array()) fail("{}: field '{}' is {}, expected an array of strings", where, key, j[key].dump());
  std::vector<std::string> out;
  for (const json& s : j[key]) {
    if (!s.is_string()) fail("{}: field '{}' holds {}, expected strings only", where, key, s.dump());
    out.push_back(s.get<std::string>());
  }
  return out;
}

EvidenceTable parse_table(const json& t, const std::string& where) {
  if (!t.is_object()) fail("{}: a 'tables' entry is {}, expected an object", where, t.dump());
  EvidenceTable out{str_field(t, where + ".tables", "file"), lines_field(t, where + ".tables", "columns", true)};
  for (const std::string& key : out.columns) {
    const auto& cols = summary_columns();
    if (std::none_of(cols.begin(), cols.end(), [&](const SummaryColumn& c) { return key == c.key; }))
      fail("{}: table of {}: unknown column '{}' (see reports/fields.cpp for the keys)", where, out.file, key);
  }
  return out;
}

Claim parse_claim(const json& c, const std::string& path, size_t i) {
  const std::string where = fmt::format("{}: claims[{}]", path, i);
  if (!c.is_object()) fail("{} is {}, expected an object", where, c.dump());
  Claim out;
  out.id = str_field(c, where, "id");
  for (auto [field, key] : {std::pair{&out.title, "title"}, {&out.device, "device"}, {&out.date, "date"},
                            {&out.commit, "commit"}, {&out.command, "command"}})
    *field = str_field(c, where + " (" + out.id + ")", key);
  if (!std::regex_match(out.date, std::regex(R"(\d{4}-\d{2}-\d{2})")))
    fail("{} ({}): field 'date' is '{}', expected YYYY-MM-DD", where, out.id, out.date);
  if (!std::regex_match(out.commit, std::regex("[0-9a-f]{7,40}(-dirty)?")))
    fail("{} ({}): field 'commit' is '{}', expected a git commit (7-40 hex digits, optionally -dirty)", where, out.id, out.commit);
  out.text = lines_field(c, where, "text", true);
  out.files = lines_field(c, where, "files", true);
  if (c.contains("tables")) {
    if (!c["tables"].is_array()) fail("{} ({}): field 'tables' is {}, expected an array", where, out.id, c["tables"].dump());
    for (const json& t : c["tables"]) out.tables.push_back(parse_table(t, where + " (" + out.id + ")"));
  }
  return out;
}

// The files under `dir` (relative, '/'-separated), the manifest itself left out.
std::set<std::string> files_under(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).generic_string());
  out.erase("MANIFEST.json");
  return out;
}

bool is_results_file(const fs::path& p) {
  if (p.extension() != ".json") return false;
  std::ifstream in(p);
  const json j = json::parse(in, nullptr, false);
  return j.is_object() && j.contains("schema_version") && j.contains("cases");
}

}  // namespace

Manifest load_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the evidence manifest", path);
  const json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail("{}: not a JSON object (expected the evidence manifest)", path);
  if (!j.contains("schema_version") || j["schema_version"] != kManifestVersion)
    fail("{}: field 'schema_version' is {}, expected {}", path, j.value("schema_version", json()).dump(), kManifestVersion);
  Manifest m;
  m.title = str_field(j, path, "title");
  m.intro = lines_field(j, path, "intro", false);
  if (!j.contains("claims") || !j["claims"].is_array()) fail("{}: field 'claims' is missing or not an array", path);
  std::set<std::string> ids;
  for (size_t i = 0; i < j["claims"].size(); ++i) {
    m.claims.push_back(parse_claim(j["claims"][i], path, i));
    if (!ids.insert(m.claims.back().id).second) fail("{}: claims[{}]: id '{}' is used twice", path, i, m.claims.back().id);
  }
  return m;
}

std::vector<std::string> check_evidence(const std::string& dir, const Manifest& m) {
  std::vector<std::string> problems;
  std::set<std::string> present = files_under(dir);
  std::map<std::string, const Claim*> owner;  // file -> the claim it backs
  for (const Claim& c : m.claims) {
    for (const std::string& f : c.files) {
      std::vector<std::string> covered;
      if (!f.empty() && f.back() == '/') {
        for (const std::string& p : present)
          if (p.rfind(f, 0) == 0) covered.push_back(p);
        if (covered.empty()) problems.push_back(fmt::format("claim '{}': folder {} is missing or empty", c.id, f));
      } else if (present.count(f)) {
        covered.push_back(f);
      } else {
        problems.push_back(fmt::format("claim '{}': file {} is not in {}", c.id, f, dir));
      }
      for (const std::string& p : covered)
        if (auto [it, fresh] = owner.emplace(p, &c); !fresh)
          problems.push_back(fmt::format("{} is listed by claims '{}' and '{}'", p, it->second->id, c.id));
    }
    for (const EvidenceTable& t : c.tables)
      if (std::find(c.files.begin(), c.files.end(), t.file) == c.files.end())
        problems.push_back(fmt::format("claim '{}': table file {} is not among its files", c.id, t.file));
  }
  for (const std::string& p : present) {
    const auto it = owner.find(p);
    if (it == owner.end()) {
      problems.push_back(fmt::format("{} backs no claim (add it to MANIFEST.json or delete it)", p));
    } else if (is_results_file(fs::path(dir) / p)) {
      const Claim& c = *it->second;
      const std::string device = load_results((fs::path(dir) / p).string()).device.name;
      if (device.find(c.device) == std::string::npos)
        problems.push_back(fmt::format("{}: device '{}' does not match claim '{}' device '{}'", p, device, c.id, c.device));
    }
  }
  return problems;
}

namespace {

std::string render_table(const std::string& dir, const EvidenceTable& t, const PrepareResults& prepare) {
  Results r = load_results((fs::path(dir) / t.file).string());
  if (prepare) prepare(r);
  std::vector<const SummaryColumn*> cols;
  for (const std::string& key : t.columns)
    for (const SummaryColumn& c : summary_columns())
      if (key == c.key) cols.push_back(&c);
  std::vector<std::string> headers;
  std::vector<bool> right;
  for (const SummaryColumn* c : cols) headers.push_back(c->header), right.push_back(c->numeric);
  std::vector<std::vector<std::string>> rows;
  for (const Case& c : r.cases) {
    rows.emplace_back();
    for (const SummaryColumn* col : cols) rows.back().push_back(cell_with_interval(*col, c));
  }
  const IntervalNotes notes = interval_notes(r);
  return fmt::format("`{}` ({}):\n\n{}\n{}\n", t.file, device_line(r.device), markdown_table(headers, right, rows),
                     notes.legend);
}

std::string anchor(const Claim& c) { return "claim-" + c.id; }

std::string render_claim(const std::string& dir, const Claim& c, const std::string& doc_to_dir,
                         const PrepareResults& prepare) {
  std::ostringstream o;
  o << "<a id=\"" << anchor(c) << "\"></a>\n## " << c.title << "\n\n";
  for (const std::string& line : c.text) o << line << "\n";
  o << "\n- device: " << c.device << ", " << c.date << ", build `" << c.commit << "`\n";
  o << "- command: `" << c.command << "`\n- files:";
  for (const std::string& f : c.files) o << " [" << f << "](" << doc_to_dir << "/" << f << ")";
  o << "\n\n";
  for (const EvidenceTable& t : c.tables) o << render_table(dir, t, prepare) << "\n";
  return o.str();
}

}  // namespace

std::string render_evidence(const std::string& dir, const Manifest& m, const std::string& doc_to_dir,
                            const PrepareResults& prepare) {
  std::ostringstream o;
  o << "# " << m.title << "\n\n";
  o << "<!-- Generated by `moebench evidence write` from " << doc_to_dir
    << "/MANIFEST.json and the files it lists; edit the manifest, not this file. -->\n\n";
  for (const std::string& line : m.intro) o << line << "\n";
  o << "\nContents:\n\n";
  for (const Claim& c : m.claims) o << "- [" << c.title << "](#" << anchor(c) << ")\n";
  o << "\n";
  for (const Claim& c : m.claims) o << render_claim(dir, c, doc_to_dir, prepare);
  std::string s = o.str();
  while (s.size() > 1 && s[s.size() - 1] == '\n' && s[s.size() - 2] == '\n') s.pop_back();
  return s;
}

}  // namespace moebench::reports
