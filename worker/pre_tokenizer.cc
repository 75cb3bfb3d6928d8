#include "worker/pre_tokenizer.h"

#include <cstdint>

#include "worker/unicode_text.h"

namespace foresight::worker {
namespace {

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// Code points of one segment with bounds-checked access (past either end reads kOutOfRange).
struct Segment {
  const std::vector<uint32_t>& cps;
  size_t begin, end;
  uint32_t at(size_t i) const { return i >= begin && i < end ? cps[i] : kOutOfRange; }
  bool letter(size_t i) const {
    uint32_t c = at(i);
    return c != kOutOfRange && IsLetter(c);
  }
  bool number(size_t i) const {
    uint32_t c = at(i);
    return c != kOutOfRange && IsNumber(c);
  }
  bool space(size_t i) const {
    uint32_t c = at(i);
    return c != kOutOfRange && IsWhitespace(c);
  }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const {
    uint32_t c = at(i);
    return c != kOutOfRange && !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c);
  }
};

// Splits [seg.begin, seg.end) with the GPT-2 regex; appends piece end offsets (in code points).
void SplitGpt2(const Segment& s, std::vector<size_t>* ends) {
  size_t pos = s.begin;
  while (pos < s.end) {
    const uint32_t c = s.at(pos);
    if (c == '\'' && pos + 1 < s.end) {
      const uint32_t n1 = s.at(pos + 1);
      if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
        pos += 2;
        ends->push_back(pos);
        continue;
      }
      const uint32_t n2 = s.at(pos + 2);
      if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
        pos += 3;
        ends->push_back(pos);
        continue;
      }
    }
    const size_t q = c == ' ' ? pos + 1 : pos;  // the optional leading space
    if (s.letter(q)) {
      pos = q;
      while (s.letter(pos)) ++pos;
      ends->push_back(pos);
      continue;
    }
    if (s.number(q)) {
      pos = q;
      while (s.number(pos)) ++pos;
      ends->push_back(pos);
      continue;
    }
    if (s.other(q)) {
      pos = q;
      while (s.other(pos)) ++pos;
      ends->push_back(pos);
      continue;
    }
    size_t n_space = 0;
    while (s.space(pos + n_space)) ++n_space;
    if (n_space > 1 && s.at(pos + n_space) != kOutOfRange) {  // \s+(?!\S): leave one for the next piece
      pos += n_space - 1;
      ends->push_back(pos);
      continue;
    }
    if (n_space > 0) {
      pos += n_space;
      ends->push_back(pos);
      continue;
    }
    ends->push_back(++pos);
  }
}

bool IsCrLf(uint32_t c) { return c == '\r' || c == '\n'; }

// The Llama 3 regex:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
void SplitLlama3(const Segment& s, int max_digits, std::vector<size_t>* ends) {
  auto lower = [](uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
  size_t pos = s.begin;
  while (pos < s.end) {
    const uint32_t c = s.at(pos);
    if (c == '\'' && pos + 1 < s.end) {
      const uint32_t n1 = lower(s.at(pos + 1));
      if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
        pos += 2;
        ends->push_back(pos);
        continue;
      }
      const uint32_t n2 = lower(s.at(pos + 2));
      if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
        pos += 3;
        ends->push_back(pos);
        continue;
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (s.letter(pos) || (!IsCrLf(c) && !s.letter(pos) && !s.number(pos) && s.letter(pos + 1))) {
      ++pos;
      while (s.letter(pos)) ++pos;
      ends->push_back(pos);
      continue;
    }
    if (s.number(pos)) {
      int n = 0;
      while (s.number(pos) && n < max_digits) {
        ++pos;
        ++n;
      }
      ends->push_back(pos);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t q = c == ' ' ? pos + 1 : pos;
    if (s.other(q)) {
      pos = q;
      while (s.other(pos)) ++pos;
      while (IsCrLf(s.at(pos))) ++pos;
      ends->push_back(pos);
      continue;
    }
    size_t n_space = 0, last_crlf_end = 0;
    while (s.space(pos + n_space)) {
      if (IsCrLf(s.at(pos + n_space))) last_crlf_end = n_space + 1;
      ++n_space;
    }
    if (last_crlf_end > 0) {  // \s*[\r\n]+
      pos += last_crlf_end;
      ends->push_back(pos);
      continue;
    }
    if (n_space > 1 && s.at(pos + n_space) != kOutOfRange) {
      pos += n_space - 1;
      ends->push_back(pos);
      continue;
    }
    if (n_space > 0) {
      pos += n_space;
      ends->push_back(pos);
      continue;
    }
    ends->push_back(++pos);
  }
}

}  // namespace

StatusOr<PreTokenizer> PreTokenizer::Create(const std::string& name) {
  if (name == "gpt2" || name == "default" || name.empty()) return PreTokenizer(name, Kind::kGpt2, 0);
  if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell") {
    return PreTokenizer(name, Kind::kDigitsThenGpt2, 0);
  }
  if (name == "llama-bpe" || name == "llama3" || name == "smaug-bpe") return PreTokenizer(name, Kind::kLlama3, 3);
  if (name == "qwen2") return PreTokenizer(name, Kind::kLlama3, 1);
  return Unimplemented("pre-tokeniser \"" + name +
                       "\" is not supported (supported: gpt2, smollm, starcoder, refact, codeshell, "
                       "llama-bpe, smaug-bpe, qwen2)");
}

std::vector<std::string> PreTokenizer::Split(std::string_view text) const {
  const std::vector<uint32_t> cps = DecodeUtf8(text);
  std::vector<size_t> ends;
  if (kind_ == Kind::kDigitsThenGpt2) {
    size_t start = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (i == cps.size() || IsNumber(cps[i])) {
        if (i > start) SplitGpt2(Segment{cps, start, i}, &ends);
        if (i < cps.size()) ends.push_back(i + 1);
        start = i + 1;
      }
    }
  } else if (kind_ == Kind::kGpt2) {
    SplitGpt2(Segment{cps, 0, cps.size()}, &ends);
  } else {
    SplitLlama3(Segment{cps, 0, cps.size()}, max_digits_, &ends);
  }
  std::vector<std::string> pieces;
  pieces.reserve(ends.size());
  size_t start = 0;
  for (size_t end : ends) {
    std::string piece;
    for (size_t i = start; i < end; ++i) AppendUtf8(cps[i], &piece);
    pieces.push_back(std::move(piece));
    start = end;
  }
  return pieces;
}

}  // namespace foresight::worker
