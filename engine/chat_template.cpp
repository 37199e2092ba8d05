// chat_template.cpp: the Jinja subset of chat templates (see chat_template.h). A template
// is cut into text and tags, the tags parsed into a tree, the tree evaluated over JSON
// values (ordered_json: objects keep their keys' order, as Python's dicts do; the
// `discarded` value stands for Jinja's undefined).
#include "engine/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "common/error.h"

namespace moebench {
namespace {

using V = nlohmann::ordered_json;

V undefined() { return V(V::value_t::discarded); }

// ---- cutting the source into text and tags ----

struct Seg {
  enum Kind { text, expr, stmt } kind;
  std::string body;
  int line;
};

int line_at(const std::string& s, size_t pos) { return 1 + static_cast<int>(std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(pos), '\n')); }

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// trim_blocks and lstrip_blocks on, as transformers and @huggingface/jinja compile chat
// templates; '-' inside a delimiter strips all white space on that side, '+' keeps it.
std::vector<Seg> cut(const std::string& src, const std::string& origin) {
  std::vector<Seg> out;
  size_t i = 0;
  bool strip_next = false, trim_next = false;  // from the previous tag's closing delimiter
  while (i <= src.size()) {
    size_t open = src.find('{', i);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open != std::string::npos && open + 1 >= src.size()) open = std::string::npos;
    const size_t text_end = open == std::string::npos ? src.size() : open;
    std::string text = src.substr(i, text_end - i);
    const char kind = open == std::string::npos ? 0 : src[open + 1];
    const char mod = open != std::string::npos && open + 2 < src.size() ? src[open + 2] : 0;
    // The text's end first: '-' strips all white space; lstrip_blocks the spaces and tabs
    // between a line's start and a block or comment tag.
    if (kind && mod == '-') {
      while (!text.empty() && is_ws(text.back())) text.pop_back();
    } else if ((kind == '%' || kind == '#') && mod != '+') {
      const size_t nl = text.find_last_of('\n');
      const size_t from = nl == std::string::npos ? 0 : nl + 1;
      const bool at_line_start = nl != std::string::npos || i == 0;
      if (at_line_start && text.find_first_not_of(" \t", from) == std::string::npos) text.erase(from);
    }
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && is_ws(text[k])) ++k;
      text.erase(0, k);
    } else if (trim_next) {
      if (text.rfind("\r\n", 0) == 0) text.erase(0, 2);
      else if (text.rfind("\n", 0) == 0) text.erase(0, 1);
    }
    if (!text.empty()) out.push_back({Seg::text, text, line_at(src, i)});
    if (open == std::string::npos) break;
    const int line = line_at(src, open);
    size_t body_from = open + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
    size_t close;
    const std::string closing = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    if (kind == '#') {
      close = src.find("#}", body_from);
    } else {  // skip string literals, which may hold the closing delimiter
      close = std::string::npos;
      char quote = 0;
      for (size_t k = body_from; k + 1 < src.size(); ++k) {
        const char c = src[k];
        if (quote) {
          if (c == '\\') ++k;
          else if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (c == closing[0] && src[k + 1] == '}') {
          close = k;
          break;
        }
      }
    }
    if (close == std::string::npos) fail("{}: line {}: '{{{}' is never closed by '{}'", origin, line, kind, closing);
    size_t body_to = close;
    strip_next = trim_next = false;
    if (body_to > body_from && src[body_to - 1] == '-') {
      --body_to;
      strip_next = true;
    } else if (body_to > body_from && src[body_to - 1] == '+') {
      --body_to;
    } else if (kind != '{') {
      trim_next = true;
    }
    if (kind != '#') out.push_back({kind == '{' ? Seg::expr : Seg::stmt, src.substr(body_from, body_to - body_from), line});
    i = close + 2;
    if (i == src.size()) break;
  }
  return out;
}

// ---- tokens of a tag ----

struct Tok {
  enum Kind { name, integer, real, string, op, end } kind;
  std::string text;
  V value;
};

std::vector<Tok> tokenize(const std::string& s, const std::string& where) {
  std::vector<Tok> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (is_ws(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::name, s.substr(i, j - i), {}});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool real = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        real = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          real = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string digits = s.substr(i, j - i);
      digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
      try {
        if (real) out.push_back({Tok::real, digits, V(std::stod(digits))});
        else out.push_back({Tok::integer, digits, V(static_cast<int64_t>(std::stoll(digits)))});
      } catch (const std::out_of_range&) {
        fail("{}: the number {} is out of range", where, digits);
      }
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          v += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': v += '\n'; break;
          case 't': v += '\t'; break;
          case 'r': v += '\r'; break;
          case '\\': v += '\\'; break;
          case '\'': v += '\''; break;
          case '"': v += '"'; break;
          default: v += '\\'; v += e; break;
        }
      }
      if (j >= s.size()) fail("{}: a string literal is never closed", where);
      out.push_back({Tok::string, v, V(v)});
      i = j + 1;
    } else {
      static const char* ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                  "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="};
      bool found = false;
      for (const char* o : ops) {
        const size_t n = std::char_traits<char>::length(o);
        if (s.compare(i, n, o) == 0) {
          out.push_back({Tok::op, o, {}});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail("{}: unexpected character '{}'", where, c);
    }
  }
  out.push_back({Tok::end, "", {}});
  return out;
}

// ---- the tree ----

struct Expr;
using ExprP = std::shared_ptr<Expr>;
struct Expr {
  enum Kind { literal, name, attr, item, slice, call, filter, test, unary, binary, cond, list, dict } kind;
  V value;                   // literal
  std::string id;            // name, attr's name, filter/test name, operator
  std::vector<ExprP> args;   // operands, call arguments (positional)
  std::vector<std::pair<std::string, ExprP>> kwargs;
  bool negated = false;      // test: is not
};

struct Node;
using Body = std::vector<std::shared_ptr<Node>>;
struct Node {
  enum Kind { text_node, output, if_, for_, set, set_block, noop_block, break_, continue_ } kind;
  int line = 0;
  std::string text;
  ExprP expr;                                  // output, set's value, for's iterable
  std::vector<std::pair<ExprP, Body>> branches;  // if: (condition, body) ...
  Body body, else_body;                        // for, set_block, noop_block; if's else
  std::vector<std::string> targets;            // for's names; set's name (and attribute)
  ExprP filter;                                // for ... if filter
};

class Parser {
 public:
  Parser(std::vector<Tok> t, std::string where) : t_(std::move(t)), where_(std::move(where)) {}
  ExprP expression() { return conditional(); }
  ExprP expression_no_cond() { return or_expr(); }
  const Tok& peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool at_end() const { return peek().kind == Tok::end; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).kind == Tok::name && peek(k).text == n; }
  bool is_op(const char* o) const { return peek().kind == Tok::op && peek().text == o; }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++p_;
    return true;
  }
  bool accept_op(const char* o) {
    if (!is_op(o)) return false;
    ++p_;
    return true;
  }
  void expect_op(const char* o) {
    if (!accept_op(o)) bad(fmt::format("'{}'", o));
  }
  std::string expect_name() {
    if (peek().kind != Tok::name) bad("a name");
    return t_[p_++].text;
  }
  [[noreturn]] void bad(const std::string& expected) const {
    const Tok& k = peek();
    fail("{}: expected {}, found {}", where_, expected, k.kind == Tok::end ? "the end of the tag" : "'" + k.text + "'");
  }
  void expect_end() {
    if (!at_end()) bad("the end of the tag");
  }

 private:
  static ExprP make(Expr::Kind k, std::string id = {}, std::vector<ExprP> args = {}) {
    auto e = std::make_shared<Expr>();
    e->kind = k;
    e->id = std::move(id);
    e->args = std::move(args);
    return e;
  }
  // Nesting is bounded (parentheses, brackets, `not`, unary signs): a hostile template
  // cannot exhaust the stack.
  struct Depth {
    Parser& p;
    explicit Depth(Parser& q) : p(q) {
      if (++p.depth_ > kMaxDepth) fail("{}: expressions nested deeper than {}", p.where_, kMaxDepth);
    }
    ~Depth() { --p.depth_; }
  };
  static constexpr int kMaxDepth = 100;
  ExprP conditional() {
    Depth d(*this);
    ExprP e = or_expr();
    while (accept_name("if")) {
      ExprP c = or_expr();
      ExprP other = accept_name("else") ? conditional() : make_literal(undefined());
      e = make(Expr::cond, "", {c, e, other});
    }
    return e;
  }
  ExprP or_expr() {
    ExprP e = and_expr();
    while (accept_name("or")) e = make(Expr::binary, "or", {e, and_expr()});
    return e;
  }
  ExprP and_expr() {
    ExprP e = not_expr();
    while (accept_name("and")) e = make(Expr::binary, "and", {e, not_expr()});
    return e;
  }
  ExprP not_expr() {
    Depth d(*this);
    if (accept_name("not")) return make(Expr::unary, "not", {not_expr()});
    return compare();
  }
  ExprP compare() {
    ExprP e = math1();
    ExprP last;  // the previous comparison of a chain: a < b < c is a < b and b < c, as in Python
    for (;;) {
      static const char* ops[] = {"==", "!=", "<=", ">=", "<", ">"};
      std::string op;
      for (const char* o : ops)
        if (accept_op(o)) {
          op = o;
          break;
        }
      if (op.empty()) {
        if (accept_name("in")) {
          op = "in";
        } else if (is_name("not") && peek(1).kind == Tok::name && peek(1).text == "in") {
          p_ += 2;
          op = "not in";
        } else {
          return e;
        }
      }
      ExprP rhs = math1();
      ExprP c = make(Expr::binary, op, {last ? last->args[1] : e, rhs});
      e = last ? make(Expr::binary, "and", {e, c}) : c;
      last = c;
    }
  }
  // One level of left-associative binary operators over the next level (Jinja2 takes **
  // left to right too).
  ExprP level(std::initializer_list<const char*> ops, ExprP (Parser::*next)()) {
    ExprP e = (this->*next)();
    for (;;) {
      const char* hit = nullptr;
      for (const char* o : ops)
        if (accept_op(o)) {
          hit = o;
          break;
        }
      if (!hit) return e;
      e = make(Expr::binary, hit, {e, (this->*next)()});
    }
  }
  ExprP math1() { return level({"+", "-"}, &Parser::concat); }
  ExprP concat() { return level({"~"}, &Parser::math2); }
  ExprP math2() { return level({"//", "*", "/", "%"}, &Parser::power); }
  ExprP power() { return level({"**"}, &Parser::unary); }
  ExprP unary() {
    if (accept_op("-")) return filters(make(Expr::unary, "-", {unary_nofilter()}));
    if (accept_op("+")) return filters(make(Expr::unary, "+", {unary_nofilter()}));
    return filters(postfix(primary()));
  }
  ExprP unary_nofilter() {
    Depth d(*this);
    if (accept_op("-")) return make(Expr::unary, "-", {unary_nofilter()});
    if (accept_op("+")) return make(Expr::unary, "+", {unary_nofilter()});
    return postfix(primary());
  }
  void call_args(ExprP e) {  // after '('
    if (accept_op(")")) return;
    do {
      if (peek().kind == Tok::name && peek(1).kind == Tok::op && peek(1).text == "=") {
        std::string k = expect_name();
        ++p_;
        e->kwargs.emplace_back(k, expression());
      } else {
        e->args.push_back(expression());
      }
    } while (accept_op(",") && !is_op(")"));
    expect_op(")");
  }
  ExprP filters(ExprP e) {
    for (;;) {
      if (accept_op("|")) {
        ExprP f = make(Expr::filter, expect_name(), {e});
        while (accept_op(".")) {
          f->id += '.';
          f->id += expect_name();
        }
        if (accept_op("(")) call_args(f);
        e = postfix(f);
      } else if (is_name("is")) {
        ++p_;
        const bool neg = accept_name("not");
        ExprP t = make(Expr::test, expect_name(), {e});
        t->negated = neg;
        if (accept_op("(")) {
          call_args(t);
        } else if (peek().kind == Tok::string || peek().kind == Tok::integer || peek().kind == Tok::real ||
                   (peek().kind == Tok::name && !is_name("and") && !is_name("or") && !is_name("else") &&
                    !is_name("if") && !is_name("in") && !is_name("not"))) {
          t->args.push_back(primary());  // `is divisibleby 3`, `is equalto x`
        }
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprP postfix(ExprP e) {
    for (;;) {
      if (accept_op(".")) {
        if (peek().kind == Tok::integer) e = make(Expr::item, "", {e, make_literal(t_[p_++].value)});
        else e = make(Expr::attr, expect_name(), {e});
      } else if (accept_op("[")) {
        ExprP parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = expression();
          if (k < 2 && accept_op(":")) {
            is_slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        if (is_slice) {
          ExprP s = make(Expr::slice, "", {e});
          for (auto& p : parts) s->args.push_back(p);
          e = s;
        } else {
          if (!parts[0]) bad("an index");
          e = make(Expr::item, "", {e, parts[0]});
        }
      } else if (accept_op("(")) {
        ExprP c = make(Expr::call, "", {e});
        call_args(c);
        e = c;
      } else {
        return e;
      }
    }
  }
  static ExprP make_literal(V v) {
    ExprP e = make(Expr::literal);
    e->value = std::move(v);
    return e;
  }
  ExprP primary() {
    const Tok& k = peek();
    if (k.kind == Tok::integer || k.kind == Tok::real) {
      ++p_;
      return make_literal(k.value);
    }
    if (k.kind == Tok::string) {
      std::string s;
      while (peek().kind == Tok::string) s += t_[p_++].text;  // adjacent literals join
      return make_literal(V(s));
    }
    if (k.kind == Tok::name) {
      ++p_;
      if (k.text == "true" || k.text == "True") return make_literal(V(true));
      if (k.text == "false" || k.text == "False") return make_literal(V(false));
      if (k.text == "none" || k.text == "None") return make_literal(V(nullptr));
      return make(Expr::name, k.text);
    }
    if (accept_op("(")) {
      ExprP e = expression();
      if (accept_op(",")) {  // a tuple: a list here
        ExprP l = make(Expr::list, "", {e});
        while (!is_op(")")) {
          l->args.push_back(expression());
          if (!accept_op(",")) break;
        }
        e = l;
      }
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      ExprP l = make(Expr::list);
      while (!is_op("]")) {
        l->args.push_back(expression());
        if (!accept_op(",")) break;
      }
      expect_op("]");
      return l;
    }
    if (accept_op("{")) {
      ExprP d = make(Expr::dict);
      while (!is_op("}")) {
        d->args.push_back(expression());
        expect_op(":");
        d->args.push_back(expression());
        if (!accept_op(",")) break;
      }
      expect_op("}");
      return d;
    }
    bad("a value");
  }

  std::vector<Tok> t_;
  std::string where_;
  size_t p_ = 0;
  int depth_ = 0;
};

// Parses segments [i, ...) into a body until a statement whose keyword is in `stops`;
// returns that keyword ("" at the end of the template).
class TreeBuilder {
 public:
  TreeBuilder(const std::vector<Seg>& s, std::string origin) : s_(s), origin_(std::move(origin)) {}
  Body parse_all() {
    Body b;
    const std::string stop = parse(b, {});
    if (!stop.empty()) fail("{}: line {}: unexpected '{{% {} %}}'", origin_, s_[i_ - 1].line, stop);
    return b;
  }

 private:
  std::string where(int line) const { return fmt::format("{}: line {}", origin_, line); }

  // Fills `b`; returns the keyword that stopped it (its tag consumed, the parser left at
  // the rest of the tag in rest_).
  std::string parse(Body& b, const std::vector<std::string>& stops) {
    if (++depth_ > 100) fail("{}: blocks nested deeper than 100", where(s_[i_ - 1].line));
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    while (i_ < s_.size()) {
      const Seg& g = s_[i_++];
      auto n = std::make_shared<Node>();
      n->line = g.line;
      if (g.kind == Seg::text) {
        n->kind = Node::text_node;
        n->text = g.body;
        b.push_back(n);
        continue;
      }
      auto p = std::make_shared<Parser>(tokenize(g.body, where(g.line)), where(g.line));
      if (g.kind == Seg::expr) {
        n->kind = Node::output;
        n->expr = p->expression();
        p->expect_end();
        b.push_back(n);
        continue;
      }
      if (p->at_end()) fail("{}: an empty '{{% %}}' tag", where(g.line));
      const std::string kw = p->expect_name();
      if (std::find(stops.begin(), stops.end(), kw) != stops.end()) {
        rest_ = p;
        return kw;
      }
      static const char* const ends[] = {"elif", "else", "endif", "endfor", "endset", "endgeneration"};
      if (std::find(std::begin(ends), std::end(ends), kw) != std::end(ends))
        fail("{}: unexpected '{{% {} %}}'", where(g.line), kw);
      if (kw == "if") {
        n->kind = Node::if_;
        ExprP cond = p->expression();
        p->expect_end();
        for (;;) {
          Body branch;
          const std::string stop = parse(branch, {"elif", "else", "endif"});
          n->branches.emplace_back(cond, std::move(branch));
          if (stop == "elif") {
            cond = rest_->expression();
            rest_->expect_end();
            continue;
          }
          if (stop == "else") {
            rest_->expect_end();
            if (parse(n->else_body, {"endif"}) != "endif") unclosed("if", g.line);
            rest_->expect_end();
          } else if (stop == "endif") {
            rest_->expect_end();
          } else {
            unclosed("if", g.line);
          }
          break;
        }
      } else if (kw == "for") {
        n->kind = Node::for_;
        do n->targets.push_back(p->expect_name());
        while (p->accept_op(","));
        if (!p->accept_name("in")) p->bad("'in'");
        n->expr = p->expression_no_cond();
        if (p->accept_name("if")) n->filter = p->expression();
        if (p->accept_name("recursive")) fail("{}: recursive loops are not supported", where(g.line));
        p->expect_end();
        ++loops_;
        std::string stop = parse(n->body, {"else", "endfor"});
        --loops_;
        if (stop == "else") {
          rest_->expect_end();
          stop = parse(n->else_body, {"endfor"});
        }
        if (stop != "endfor") unclosed("for", g.line);
        rest_->expect_end();
      } else if (kw == "set") {
        n->targets.push_back(p->expect_name());
        if (p->accept_op(".")) n->targets.push_back(p->expect_name());
        if (p->accept_op("=")) {
          n->kind = Node::set;
          n->expr = p->expression();
          p->expect_end();
        } else {
          n->kind = Node::set_block;
          p->expect_end();
          if (parse(n->body, {"endset"}) != "endset") unclosed("set", g.line);
          rest_->expect_end();
        }
      } else if (kw == "break" || kw == "continue") {  // the loopcontrols extension transformers loads
        if (loops_ == 0) fail("{}: '{{% {} %}}' outside a loop", where(g.line), kw);
        n->kind = kw == "break" ? Node::break_ : Node::continue_;
        p->expect_end();
      } else if (kw == "generation") {  // transformers' marker of assistant text: renders its body
        n->kind = Node::noop_block;
        p->expect_end();
        if (parse(n->body, {"endgeneration"}) != "endgeneration") unclosed("generation", g.line);
        rest_->expect_end();
      } else {
        fail("{}: '{{% {} %}}' is not supported (the chat-template subset: if, for, set, generation)", where(g.line),
             kw);
      }
      b.push_back(n);
    }
    return "";
  }
  [[noreturn]] void unclosed(const char* what, int line) const {
    fail("{}: line {}: '{{% {} %}}' is never closed", origin_, line, what);
  }

  const std::vector<Seg>& s_;
  std::string origin_;
  size_t i_ = 0;
  int loops_ = 0;  // for bodies open around the tag being parsed
  int depth_ = 0;  // bodies open
  std::shared_ptr<Parser> rest_;
};

// ---- values as Python prints and compares them ----

bool truthy(const V& v) {
  switch (v.type()) {
    case V::value_t::discarded: case V::value_t::null: return false;
    case V::value_t::boolean: return v.get<bool>();
    case V::value_t::number_integer: case V::value_t::number_unsigned: return v.get<int64_t>() != 0;
    case V::value_t::number_float: return v.get<double>() != 0;
    case V::value_t::string: return !v.get_ref<const std::string&>().empty();
    default: return !v.empty();
  }
}

std::string py_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string py_repr(const V& v);
std::string py_str(const V& v) {
  if (v.is_discarded()) return "";
  if (v.is_string()) return v.get<std::string>();
  return py_repr(v);
}
std::string py_repr(const V& v) {
  switch (v.type()) {
    case V::value_t::discarded: return "";
    case V::value_t::null: return "None";
    case V::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case V::value_t::number_integer: case V::value_t::number_unsigned: return std::to_string(v.get<int64_t>());
    case V::value_t::number_float: return py_float(v.get<double>());
    case V::value_t::string: {
      const std::string& t = v.get_ref<const std::string&>();
      const char q = t.find('\'') != std::string::npos && t.find('"') == std::string::npos ? '"' : '\'';
      std::string r(1, q);
      for (char c : t) {
        if (c == '\\') r += "\\\\";
        else if (c == q) r += std::string("\\") + q;
        else if (c == '\n') r += "\\n";
        else if (c == '\t') r += "\\t";
        else if (c == '\r') r += "\\r";
        else r += c;
      }
      return r + q;
    }
    case V::value_t::array: {
      std::string r = "[";
      for (size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + py_repr(v[i]);
      return r + "]";
    }
    default: {
      std::string r = "{";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        r += (first ? "" : ", ") + py_repr(V(it.key())) + ": " + py_repr(it.value());
        first = false;
      }
      return r + "}";
    }
  }
}

// json.dumps as transformers' tojson filter calls it (ensure_ascii off; separators ", "
// and ": ", or "," and ": " with an indent).
std::string to_json(const V& v, int indent, int depth = 0) {
  switch (v.type()) {
    case V::value_t::discarded: case V::value_t::null: return "null";
    case V::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) return "NaN";
      if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
      return py_float(d);
    }
    case V::value_t::array: case V::value_t::object: {
      const bool arr = v.is_array();
      if (v.empty()) return arr ? "[]" : "{}";
      std::string pad, end_pad;
      if (indent > 0) {
        pad.assign(static_cast<size_t>(indent * (depth + 1)) + 1, ' ');
        end_pad.assign(static_cast<size_t>(indent * depth) + 1, ' ');
        pad[0] = end_pad[0] = '\n';
      }
      const std::string sep = indent > 0 ? "," : ", ";
      std::string r(1, arr ? '[' : '{');
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        r += (first ? "" : sep) + pad;
        if (!arr) r += V(it.key()).dump(-1, ' ', false) + ": ";
        r += to_json(it.value(), indent, depth + 1);
        first = false;
      }
      return r + end_pad + (arr ? ']' : '}');
    }
    default: return v.dump(-1, ' ', false, V::error_handler_t::replace);
  }
}

// UTF-8 code points of s (Python indexes and counts these).
std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0xF0) n = 4;
    else if (c >= 0xE0) n = 3;
    else if (c >= 0xC0) n = 2;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

const char* type_name(const V& v) {
  if (v.is_discarded()) return "undefined";
  if (v.is_null()) return "none";
  if (v.is_boolean()) return "bool";
  if (v.is_number_integer()) return "int";
  if (v.is_number()) return "float";
  if (v.is_string()) return "str";
  if (v.is_array()) return "list";
  return "dict";
}

bool py_equal(const V& a, const V& b) {
  if (a.is_number() && b.is_number() && !a.is_boolean() && !b.is_boolean()) return a.get<double>() == b.get<double>();
  if (a.is_discarded() || b.is_discarded()) return a.is_discarded() && b.is_discarded();
  return a == b;
}

// ---- rendering ----

class Renderer {
 public:
  Renderer(std::string origin, const V& context) : origin_(std::move(origin)) {
    scopes_.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it) scopes_.back()[it.key()] = it.value();
  }
  void run(const Body& b) { body(b); }
  std::string out;

 private:
  [[noreturn]] void err(const std::string& what) const { fail("{}: line {}: {}", origin_, line_, what); }

  V* lookup(const std::string& n) {
    for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s) {
      auto it = s->find(n);
      if (it != s->end()) return &it->second;
    }
    return nullptr;
  }

  void body(const Body& b) {
    for (const auto& n : b) {
      node(*n);
      if (jump_) return;  // a break or continue leaves the bodies up to its loop
    }
  }
  // A template's work is bounded: its steps (nodes run, loop turns) and its text.
  static constexpr int64_t kMaxSteps = 10'000'000;
  static constexpr size_t kMaxOut = 64u << 20;
  void step() {
    if (++steps_ > kMaxSteps) err(fmt::format("the template runs past {} steps", kMaxSteps));
    if (out.size() > kMaxOut) err(fmt::format("the template's text passes {} MiB", kMaxOut >> 20));
  }
  void node(const Node& n) {
    line_ = n.line;
    step();
    switch (n.kind) {
      case Node::text_node: out += n.text; break;
      case Node::output: out += py_str(eval(*n.expr)); break;
      case Node::if_: {
        for (const auto& [cond, b] : n.branches)
          if (truthy(eval(*cond))) {
            body(b);
            return;
          }
        body(n.else_body);
        break;
      }
      case Node::for_: loop(n); break;
      case Node::set: assign(n, eval(*n.expr)); break;
      case Node::set_block: {
        std::string saved;
        std::swap(saved, out);
        body(n.body);
        std::swap(saved, out);
        assign(n, V(saved));
        break;
      }
      case Node::noop_block: body(n.body); break;
      case Node::break_: jump_ = 1; break;
      case Node::continue_: jump_ = 2; break;
    }
  }
  void assign(const Node& n, V v) {
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    V* ns = lookup(n.targets[0]);
    if (!ns || !ns->is_object()) err(fmt::format("set {}.{}: '{}' is no namespace", n.targets[0], n.targets[1], n.targets[0]));
    (*ns)[n.targets[1]] = std::move(v);
  }
  void loop(const Node& n) {
    const V seq = eval(*n.expr);
    std::vector<V> items;
    if (seq.is_array()) {
      items.assign(seq.begin(), seq.end());
    } else if (seq.is_object()) {
      for (auto it = seq.begin(); it != seq.end(); ++it) items.emplace_back(it.key());
    } else if (seq.is_string()) {
      for (auto& c : code_points(seq.get<std::string>())) items.emplace_back(c);
    } else if (!seq.is_discarded()) {
      err(fmt::format("for: {} is not iterable", type_name(seq)));
    }
    auto bind = [&](std::map<std::string, V>& scope, const V& item) {
      if (n.targets.size() == 1) {
        scope[n.targets[0]] = item;
        return;
      }
      if (!item.is_array() || item.size() != n.targets.size())
        err(fmt::format("for: cannot unpack {} into {} names", py_repr(item), n.targets.size()));
      for (size_t k = 0; k < n.targets.size(); ++k) scope[n.targets[k]] = item[k];
    };
    if (n.filter) {  // `for x in xs if cond`: the loop counts the items kept
      std::vector<V> kept;
      for (const V& item : items) {
        scopes_.emplace_back();
        bind(scopes_.back(), item);
        if (truthy(eval(*n.filter))) kept.push_back(item);
        scopes_.pop_back();
      }
      items.swap(kept);
    }
    if (items.empty()) {
      body(n.else_body);
      return;
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      step();
      scopes_.emplace_back();
      bind(scopes_.back(), items[static_cast<size_t>(i)]);
      V lp = V::object();
      lp["index"] = i + 1;
      lp["index0"] = i;
      lp["revindex"] = len - i;
      lp["revindex0"] = len - i - 1;
      lp["first"] = i == 0;
      lp["last"] = i == len - 1;
      lp["length"] = len;
      lp["previtem"] = i > 0 ? items[static_cast<size_t>(i - 1)] : undefined();
      lp["nextitem"] = i + 1 < len ? items[static_cast<size_t>(i + 1)] : undefined();
      scopes_.back()["loop"] = std::move(lp);
      body(n.body);
      scopes_.pop_back();
      const int jump = jump_;
      jump_ = 0;
      if (jump == 1) break;
    }
  }

  // ---- expressions ----
  V eval(const Expr& e) {
    switch (e.kind) {
      case Expr::literal: return e.value;
      case Expr::name: {
        const V* v = lookup(e.id);
        return v ? *v : undefined();
      }
      case Expr::attr: return attribute(eval(*e.args[0]), e.id);
      case Expr::item: return item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::slice: return slice(e);
      case Expr::call: return call(e);
      case Expr::filter: return filter(e);
      case Expr::test: {
        const bool r = test(e);
        return V(e.negated ? !r : r);
      }
      case Expr::unary: {
        const V a = eval(*e.args[0]);
        if (e.id == "not") return V(!truthy(a));
        if (!a.is_number()) err(fmt::format("bad operand type for unary {}: '{}'", e.id, type_name(a)));
        if (e.id == "+") return a;
        if (a.is_number_integer() && a.get<int64_t>() == INT64_MIN) err("-(-2**63) leaves the 64-bit integers");
        return a.is_number_integer() ? V(-a.get<int64_t>()) : V(-a.get<double>());
      }
      case Expr::binary: return binary(e);
      case Expr::cond: return truthy(eval(*e.args[0])) ? eval(*e.args[1]) : eval(*e.args[2]);
      case Expr::list: {
        V l = V::array();
        for (const auto& a : e.args) l.push_back(eval(*a));
        return l;
      }
      case Expr::dict: {
        V d = V::object();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const V key = eval(*e.args[k]);
          if (!key.is_string()) err(fmt::format("a dict key must be a string here, found {}", type_name(key)));
          d[key.get<std::string>()] = eval(*e.args[k + 1]);
        }
        return d;
      }
    }
    return undefined();
  }

  V attribute(const V& obj, const std::string& name) {
    if (obj.is_object()) {
      auto it = obj.find(name);
      return it == obj.end() ? undefined() : *it;
    }
    return undefined();
  }
  static int64_t index_of(int64_t i, int64_t n) { return i < 0 ? i + n : i; }
  V item(const V& obj, const V& idx) {
    if (obj.is_object()) {
      if (!idx.is_string()) return undefined();
      auto it = obj.find(idx.get<std::string>());
      return it == obj.end() ? undefined() : *it;
    }
    if ((obj.is_array() || obj.is_string()) && idx.is_number_integer()) {
      if (obj.is_array()) {
        const int64_t k = index_of(idx.get<int64_t>(), static_cast<int64_t>(obj.size()));
        return k >= 0 && k < static_cast<int64_t>(obj.size()) ? obj[static_cast<size_t>(k)] : undefined();
      }
      const auto cps = code_points(obj.get<std::string>());
      const int64_t k = index_of(idx.get<int64_t>(), static_cast<int64_t>(cps.size()));
      return k >= 0 && k < static_cast<int64_t>(cps.size()) ? V(cps[static_cast<size_t>(k)]) : undefined();
    }
    return undefined();
  }
  V slice(const Expr& e) {
    const V obj = eval(*e.args[0]);
    auto opt = [&](const ExprP& p) -> std::optional<int64_t> {
      if (!p) return std::nullopt;
      const V v = eval(*p);
      if (v.is_null() || v.is_discarded()) return std::nullopt;
      if (!v.is_number_integer()) err("slice indices must be integers");
      return v.get<int64_t>();
    };
    const auto a = opt(e.args[1]), b = opt(e.args[2]), st = opt(e.args[3]);
    const int64_t step = st.value_or(1);
    if (step == 0) err("slice step cannot be zero");
    std::vector<V> items;
    const bool str = obj.is_string();
    if (obj.is_array()) items.assign(obj.begin(), obj.end());
    else if (str) for (auto& c : code_points(obj.get<std::string>())) items.emplace_back(c);
    else err(fmt::format("'{}' cannot be sliced", type_name(obj)));
    const int64_t n = static_cast<int64_t>(items.size());
    auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t from = clamp(a, step > 0 ? 0 : n - 1), to = clamp(b, step > 0 ? n : -1);
    V r = str ? V("") : V::array();
    const int64_t stride = std::clamp<int64_t>(step, -(n + 1), n + 1);  // the same items, no overflow
    for (int64_t i = from; step > 0 ? i < to : i > to; i += stride) {
      if (str) r.get_ref<std::string&>() += items[static_cast<size_t>(i)].get<std::string>();
      else r.push_back(items[static_cast<size_t>(i)]);
    }
    return r;
  }

  std::vector<V> positional(const Expr& e, size_t from = 0) {
    std::vector<V> r;
    for (size_t k = from; k < e.args.size(); ++k) r.push_back(eval(*e.args[k]));
    return r;
  }
  V kwarg(const Expr& e, const std::string& key, const std::vector<V>& pos, size_t at, V dflt) {
    for (const auto& [k, v] : e.kwargs)
      if (k == key) return eval(*v);
    return at < pos.size() ? pos[at] : dflt;
  }

  static bool is_space_char(const std::string& cp, const std::string* chars) {
    if (chars) return chars->find(cp) != std::string::npos;
    return cp.size() == 1 && is_ws(cp[0]);
  }
  static std::string strip(const std::string& s, bool left, bool right, const std::string* chars) {
    auto cps = code_points(s);
    size_t b = 0, e = cps.size();
    if (left) while (b < e && is_space_char(cps[b], chars)) ++b;
    if (right) while (e > b && is_space_char(cps[e - 1], chars)) --e;
    std::string r;
    for (size_t k = b; k < e; ++k) r += cps[k];
    return r;
  }
  static V split(const std::string& s, const V& sep, int64_t maxsplit) {
    V r = V::array();
    if (sep.is_null() || sep.is_discarded()) {  // runs of white space, no empty parts
      size_t i = 0;
      int64_t done = 0;
      while (i < s.size()) {
        while (i < s.size() && is_ws(s[i])) ++i;
        if (i >= s.size()) break;
        if (maxsplit >= 0 && done == maxsplit) {
          std::string rest = s.substr(i);
          while (!rest.empty() && is_ws(rest.back())) rest.pop_back();
          r.push_back(rest);
          return r;
        }
        size_t j = i;
        while (j < s.size() && !is_ws(s[j])) ++j;
        r.push_back(s.substr(i, j - i));
        ++done;
        i = j;
      }
      return r;
    }
    const std::string d = sep.get<std::string>();
    if (d.empty()) fail("split: empty separator");
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
      const size_t k = (maxsplit >= 0 && done == maxsplit) ? std::string::npos : s.find(d, i);
      if (k == std::string::npos) {
        r.push_back(s.substr(i));
        return r;
      }
      r.push_back(s.substr(i, k - i));
      i = k + d.size();
      ++done;
    }
  }
  static std::string case_of(const std::string& s, int mode) {  // 0 upper, 1 lower, 2 capitalize, 3 title
    std::string r = s;
    bool start = true;
    for (size_t i = 0; i < r.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(r[i]);
      if (mode == 0) r[i] = static_cast<char>(std::toupper(c));
      else if (mode == 1) r[i] = static_cast<char>(std::tolower(c));
      else if (mode == 2) r[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
      else {
        r[i] = static_cast<char>(start ? std::toupper(c) : std::tolower(c));
        start = !std::isalpha(c);
      }
    }
    return r;
  }
  static bool starts_or_ends(const std::string& s, const V& what, bool starts) {
    auto one = [&](const std::string& p) {
      return p.size() <= s.size() && (starts ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0);
    };
    if (what.is_array()) {
      for (const V& p : what)
        if (p.is_string() && one(p.get<std::string>())) return true;
      return false;
    }
    return what.is_string() && one(what.get<std::string>());
  }

  V call(const Expr& e) {
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::attr) return method(eval(*callee.args[0]), callee.id, e);
    if (callee.kind != Expr::name) err("only functions and methods can be called");
    const std::vector<V> pos = positional(e, 1);
    const std::string& f = callee.id;
    if (f == "raise_exception") {
      fail("{}: line {}: the template raised: {}", origin_, line_, pos.empty() ? "" : py_str(pos[0]));
    }
    if (f == "namespace" || f == "dict") {
      V ns = V::object();
      if (!pos.empty()) err(fmt::format("{}() takes keyword arguments only here", f));
      for (const auto& [k, v] : e.kwargs) ns[k] = eval(*v);
      return ns;
    }
    if (f == "range") {
      for (const V& p : pos)
        if (!p.is_number_integer()) err("range() takes integers");
      int64_t a = 0, b = 0, st = 1;
      if (pos.size() == 1) b = pos[0].get<int64_t>();
      else if (pos.size() >= 2) a = pos[0].get<int64_t>(), b = pos[1].get<int64_t>();
      if (pos.size() == 3) st = pos[2].get<int64_t>();
      if (pos.empty() || pos.size() > 3 || st == 0) err("range() takes 1 to 3 integers, the step not 0");
      V r = V::array();
      for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
        r.push_back(i);
        if (r.size() > 1000000) err("range(): over a million items");
      }
      return r;
    }
    err(fmt::format("'{}' is not a function the chat-template subset has (raise_exception, namespace, dict, range)", f));
  }

  V method(const V& obj, const std::string& m, const Expr& e) {
    const std::vector<V> pos = positional(e, 1);
    auto str_arg = [&](size_t k) -> std::string {
      if (k >= pos.size() || !pos[k].is_string()) err(fmt::format("{}() expects a string argument", m));
      return pos[k].get<std::string>();
    };
    if (obj.is_string()) {
      const std::string& s = obj.get_ref<const std::string&>();
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        std::string chars;
        const bool given = !pos.empty() && pos[0].is_string();
        if (given) chars = pos[0].get<std::string>();
        return V(strip(s, m != "rstrip", m != "lstrip", given ? &chars : nullptr));
      }
      if (m == "split") {
        const V sep = kwarg(e, "sep", pos, 0, V(nullptr));
        const V mx = kwarg(e, "maxsplit", pos, 1, V(-1));
        return split(s, sep, mx.is_number_integer() ? mx.get<int64_t>() : -1);
      }
      if (m == "startswith" || m == "endswith") return V(starts_or_ends(s, pos.empty() ? V() : pos[0], m == "startswith"));
      if (m == "upper") return V(case_of(s, 0));
      if (m == "lower") return V(case_of(s, 1));
      if (m == "capitalize") return V(case_of(s, 2));
      if (m == "title") return V(case_of(s, 3));
      if (m == "replace") {
        const std::string from = str_arg(0), to = str_arg(1);
        int64_t count = pos.size() > 2 && pos[2].is_number_integer() ? pos[2].get<int64_t>() : -1;
        if (from.empty()) err("replace() with an empty string is not supported");
        std::string r;
        size_t i = 0;
        for (size_t k; count != 0 && (k = s.find(from, i)) != std::string::npos; --count) {
          r += s.substr(i, k - i) + to;
          i = k + from.size();
        }
        return V(r + s.substr(i));
      }
      if (m == "find") {
        const size_t k = s.find(str_arg(0));
        return V(k == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(s.substr(0, k)).size()));
      }
      if (m == "join") {
        if (pos.empty() || !pos[0].is_array()) err("join() expects a list");
        std::string r;
        for (size_t k = 0; k < pos[0].size(); ++k) r += (k ? s : "") + py_str(pos[0][k]);
        return V(r);
      }
    } else if (obj.is_object()) {
      if (m == "items") {
        V r = V::array();
        for (auto it = obj.begin(); it != obj.end(); ++it) r.push_back(V::array({it.key(), it.value()}));
        return r;
      }
      if (m == "keys" || m == "values") {
        V r = V::array();
        for (auto it = obj.begin(); it != obj.end(); ++it) r.push_back(m == "keys" ? V(it.key()) : it.value());
        return r;
      }
      if (m == "get") {
        const V v = item(obj, pos.empty() ? V() : pos[0]);
        return v.is_discarded() ? (pos.size() > 1 ? pos[1] : V(nullptr)) : v;
      }
    }
    err(fmt::format("'{}' has no method '{}' in the chat-template subset", type_name(obj), m));
  }

  V filter(const Expr& e) {
    const V x = eval(*e.args[0]);
    const std::vector<V> pos = positional(e, 1);
    const std::string& f = e.id;
    if (f == "length" || f == "count") {
      if (x.is_string()) return V(static_cast<int64_t>(code_points(x.get<std::string>()).size()));
      if (x.is_array() || x.is_object()) return V(static_cast<int64_t>(x.size()));
      if (x.is_discarded()) return V(int64_t{0});
      err(fmt::format("length of {}", type_name(x)));
    }
    if (f == "tojson") {
      const V ind = kwarg(e, "indent", pos, 0, V(nullptr));
      return V(to_json(x, ind.is_number_integer() ? static_cast<int>(ind.get<int64_t>()) : 0));
    }
    if (f == "safe") return x;
    if (f == "string") return V(py_str(x));
    if (f == "trim") {
      if (!x.is_string()) err(fmt::format("trim of {}", type_name(x)));
      return V(strip(x.get<std::string>(), true, true, nullptr));
    }
    if (f == "upper" || f == "lower" || f == "capitalize" || f == "title") {
      if (!x.is_string()) err(fmt::format("{} of {}", f, type_name(x)));
      return V(case_of(x.get<std::string>(), f == "upper" ? 0 : f == "lower" ? 1 : f == "capitalize" ? 2 : 3));
    }
    if (f == "default" || f == "d") {
      const V dflt = kwarg(e, "default_value", pos, 0, V(""));
      const bool boolean = truthy(kwarg(e, "boolean", pos, 1, V(false)));
      return (x.is_discarded() || (boolean && !truthy(x))) ? dflt : x;
    }
    if (f == "first" || f == "last") {
      if (x.is_array()) return x.empty() ? undefined() : (f == "first" ? x.front() : x.back());
      if (x.is_string()) {
        auto cps = code_points(x.get<std::string>());
        return cps.empty() ? undefined() : V(f == "first" ? cps.front() : cps.back());
      }
      err(fmt::format("{} of {}", f, type_name(x)));
    }
    if (f == "join") {
      if (!x.is_array()) err(fmt::format("join of {}", type_name(x)));
      const V sep = kwarg(e, "d", pos, 0, V(""));
      const V attr = kwarg(e, "attribute", pos, 1, undefined());
      std::string r;
      for (size_t k = 0; k < x.size(); ++k)
        r += (k ? py_str(sep) : "") + py_str(attr.is_string() ? attribute(x[k], attr.get<std::string>()) : x[k]);
      return V(r);
    }
    if (f == "list") {
      if (x.is_array()) return x;
      V r = V::array();
      if (x.is_string()) for (auto& c : code_points(x.get<std::string>())) r.push_back(c);
      else if (x.is_object()) for (auto it = x.begin(); it != x.end(); ++it) r.push_back(it.key());
      else err(fmt::format("list of {}", type_name(x)));
      return r;
    }
    if (f == "reverse") {
      if (x.is_array()) return V(V::array_t(x.rbegin(), x.rend()));
      if (x.is_string()) {
        auto cps = code_points(x.get<std::string>());
        std::string r;
        for (auto it = cps.rbegin(); it != cps.rend(); ++it) r += *it;
        return V(r);
      }
      err(fmt::format("reverse of {}", type_name(x)));
    }
    if (f == "items") return method(x, "items", e);
    if (f == "int") {
      if (x.is_number_integer()) return x;
      if (x.is_number()) {
        const double d = x.get<double>();
        return std::fabs(d) < 9.2e18 ? V(static_cast<int64_t>(d)) : V(int64_t{0});
      }
      if (x.is_string()) {
        try {
          return V(static_cast<int64_t>(std::stoll(x.get<std::string>())));
        } catch (...) {
          return V(int64_t{0});
        }
      }
      return V(int64_t{0});
    }
    if (f == "abs") {
      if (x.is_number_integer()) {
        if (x.get<int64_t>() == INT64_MIN) err("abs(-2**63) leaves the 64-bit integers");
        return V(std::llabs(x.get<int64_t>()));
      }
      if (x.is_number()) return V(std::fabs(x.get<double>()));
      err(fmt::format("abs of {}", type_name(x)));
    }
    if (f == "replace") {
      if (!x.is_string()) err(fmt::format("replace of {}", type_name(x)));
      return method(x, "replace", e);
    }
    if (f == "map" || f == "selectattr" || f == "rejectattr") {
      if (!x.is_array()) err(fmt::format("{} of {}", f, type_name(x)));
      V r = V::array();
      if (f == "map") {
        const V attr = kwarg(e, "attribute", {}, 0, undefined());
        if (!attr.is_string()) err("map: only map(attribute=NAME) is supported");
        for (const V& v : x) r.push_back(attribute(v, attr.get<std::string>()));
        return r;
      }
      if (pos.empty() || !pos[0].is_string()) err(fmt::format("{} expects an attribute name", f));
      for (const V& v : x) {
        const V a = attribute(v, pos[0].get<std::string>());
        bool t = truthy(a);
        if (pos.size() > 1) {
          if (!pos[1].is_string()) err(fmt::format("{}: the test must be named by a string", f));
          t = test_named(pos[1].get<std::string>(), a, std::vector<V>(pos.begin() + 2, pos.end()));
        }
        if (t == (f == "selectattr")) r.push_back(v);
      }
      return r;
    }
    err(fmt::format("filter '{}' is not in the chat-template subset", f));
  }

  bool test(const Expr& e) { return test_named(e.id, eval(*e.args[0]), positional(e, 1)); }
  bool test_named(const std::string& t, const V& x, const std::vector<V>& args) {
    if (t == "defined") return !x.is_discarded();
    if (t == "undefined") return x.is_discarded();
    if (t == "none") return x.is_null();
    if (t == "boolean") return x.is_boolean();
    if (t == "true") return x.is_boolean() && x.get<bool>();
    if (t == "false") return x.is_boolean() && !x.get<bool>();
    if (t == "integer") return x.is_number_integer();
    if (t == "float") return x.is_number_float();
    if (t == "number") return x.is_number();
    if (t == "string") return x.is_string();
    if (t == "mapping") return x.is_object();
    if (t == "iterable") return x.is_array() || x.is_object() || x.is_string();
    if (t == "sequence") return x.is_array() || x.is_string() || x.is_object();
    if (t == "callable") return false;
    if (t == "odd" || t == "even") {
      if (!x.is_number_integer()) err(fmt::format("{} of {}", t, type_name(x)));
      return (x.get<int64_t>() % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
      if (!x.is_number_integer() || args.empty() || !args[0].is_number_integer() || args[0].get<int64_t>() == 0)
        err("divisibleby expects integers");
      return x.get<int64_t>() % args[0].get<int64_t>() == 0;
    }
    if (t == "eq" || t == "equalto" || t == "sameas") return !args.empty() && py_equal(x, args[0]);
    if (t == "ne") return args.empty() || !py_equal(x, args[0]);
    if (t == "lower" || t == "upper") return x.is_string() && x.get<std::string>() == case_of(x.get<std::string>(), t == "upper" ? 0 : 1);
    if (t == "in") return !args.empty() && contains(args[0], x);
    err(fmt::format("test '{}' is not in the chat-template subset", t));
  }

  bool contains(const V& hay, const V& needle) {
    if (hay.is_string()) {
      if (!needle.is_string()) err(fmt::format("'in <string>' requires a string, found {}", type_name(needle)));
      return hay.get_ref<const std::string&>().find(needle.get<std::string>()) != std::string::npos;
    }
    if (hay.is_array()) {
      for (const V& v : hay)
        if (py_equal(v, needle)) return true;
      return false;
    }
    if (hay.is_object()) return needle.is_string() && hay.contains(needle.get<std::string>());
    if (hay.is_discarded()) return false;
    err(fmt::format("argument of type '{}' is not iterable", type_name(hay)));
  }

  V binary(const Expr& e) {
    const std::string& op = e.id;
    if (op == "and") {
      V a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      V a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    const V a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "==") return V(py_equal(a, b));
    if (op == "!=") return V(!py_equal(a, b));
    if (op == "in") return V(contains(b, a));
    if (op == "not in") return V(!contains(b, a));
    if (op == "~") return V(py_str(a) + py_str(b));
    const bool num = a.is_number() && b.is_number();
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (num) c = a.get<double>() < b.get<double>() ? -1 : a.get<double>() > b.get<double>() ? 1 : 0;
      else if (a.is_string() && b.is_string()) c = a.get<std::string>().compare(b.get<std::string>());
      else err(fmt::format("'{}' not supported between '{}' and '{}'", op, type_name(a), type_name(b)));
      return V(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return V(a.get<std::string>() + b.get<std::string>());
      if (a.is_array() && b.is_array()) {
        V r = a;
        for (const V& v : b) r.push_back(v);
        return r;
      }
    }
    if (op == "*" && a.is_string() && b.is_number_integer()) {
      const int64_t times = std::max<int64_t>(0, b.get<int64_t>());
      if (times > 0 && a.get_ref<const std::string&>().size() > kMaxOut / static_cast<uint64_t>(times))
        err(fmt::format("a string repeated past {} MiB", kMaxOut >> 20));
      std::string r;
      for (int64_t k = 0; k < times; ++k) r += a.get<std::string>();
      return V(r);
    }
    if (!num) err(fmt::format("unsupported operand types for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
    const bool ints = a.is_number_integer() && b.is_number_integer();
    if (ints && op != "/" && op != "**") {
      const int64_t x = a.get<int64_t>(), y = b.get<int64_t>();
      int64_t r0 = 0;
      bool over = false;
      if (op == "+") over = __builtin_add_overflow(x, y, &r0);
      else if (op == "-") over = __builtin_sub_overflow(x, y, &r0);
      else if (op == "*") over = __builtin_mul_overflow(x, y, &r0);
      if (over) err(fmt::format("{} {} {} leaves the 64-bit integers this renderer has", x, op, y));
      if (op == "+" || op == "-" || op == "*") return V(r0);
      if (y == 0) err("division by zero");
      if (x == INT64_MIN && y == -1) err("integer division past the 64-bit integers this renderer has");
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;  // Python floors
      return op == "//" ? V(q) : V(r);
    }
    const double x = a.get<double>(), y = b.get<double>();
    if (op == "+") return V(x + y);
    if (op == "-") return V(x - y);
    if (op == "*") return V(x * y);
    if (op == "**") {
      const double r = std::pow(x, y);
      if (!ints || b.get<int64_t>() < 0) return V(r);
      if (!(std::fabs(r) < 9.0e15)) err("an integer power past the integers this renderer holds exactly");
      return V(static_cast<int64_t>(std::llround(r)));
    }
    if (y == 0) err("division by zero");
    if (op == "/") return V(x / y);
    if (op == "//") return V(std::floor(x / y));
    return V(x - std::floor(x / y) * y);
  }

  std::string origin_;
  int line_ = 0;
  int jump_ = 0;  // 1: a break, 2: a continue on its way to its loop
  int64_t steps_ = 0;
  std::vector<std::map<std::string, V>> scopes_;
};

std::string token_text(const V& v, const std::string& file, const char* field) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail("{}: field '{}' is {}, expected a string, null or an added token's object", file, field, v.dump().substr(0, 80));
}

}  // namespace

struct ChatTemplateTree {
  Body body;
};

namespace {
std::string render(const Body& tree, const nlohmann::ordered_json& context, const std::string& origin) {
  if (!context.is_object()) fail("{}: the context must be an object", origin);
  Renderer r(origin, context);
  r.run(tree);
  return r.out;
}
}  // namespace

std::string render_jinja(const std::string& source, const nlohmann::ordered_json& context, const std::string& origin) {
  return render(TreeBuilder(cut(source, origin), origin).parse_all(), context, origin);
}

ChatTemplate ChatTemplate::load(const std::string& path, const std::string& name) {
  std::ifstream f(path);
  if (!f) fail("{}: cannot open", path);
  V j;
  try {
    j = V::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", path, type_name(j));
  ChatTemplate t;
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) fail("{}: no field 'chat_template' (the checkpoint has no chat template)", path);
  if (it->is_string()) {
    if (name != "default") fail("{}: field 'chat_template' is one template, no template named '{}'", path, name);
    t.source = it->get<std::string>();
    t.origin = path + ": chat_template";
  } else if (it->is_array()) {
    for (size_t k = 0; k < it->size(); ++k) {
      const V& e = (*it)[k];
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("template") ||
          !e["template"].is_string())
        fail("{}: field 'chat_template[{}]' expected an object with string fields 'name' and 'template'", path, k);
      if (e["name"].get<std::string>() == name) {
        t.source = e["template"].get<std::string>();
        t.origin = fmt::format("{}: chat_template[{}] ({})", path, k, name);
      }
    }
    if (t.origin.empty()) fail("{}: field 'chat_template' has no template named '{}'", path, name);
  } else {
    fail("{}: field 'chat_template' is {}, expected a string or a list of named templates", path, type_name(*it));
  }
  t.bos_token = token_text(j.value("bos_token", V(nullptr)), path, "bos_token");
  t.eos_token = token_text(j.value("eos_token", V(nullptr)), path, "eos_token");
  // A broken template fails here, naming its line.
  t.tree = std::make_shared<const ChatTemplateTree>(ChatTemplateTree{TreeBuilder(cut(t.source, t.origin), t.origin).parse_all()});
  return t;
}

std::string ChatTemplate::apply(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                const nlohmann::ordered_json& extra) const {
  V ctx = V::object();
  ctx["messages"] = messages;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token;
  ctx["eos_token"] = eos_token;
  for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
  if (!tree) fail("chat template {}: not loaded (ChatTemplate::load parses it)", origin);
  return render(tree->body, ctx, origin);
}

}  // namespace moebench
