#include "worker/text_stream.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <utility>

namespace foresight::worker {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The UTF-8 sequence that starts at text[i], read by Unicode's table of well-formed byte
// sequences (no overlongs, surrogates or code points past U+10FFFF).
struct Utf8Unit {
  size_t length;   // well-formed: the sequence's bytes; otherwise its longest well-formed prefix (>= 1)
  bool complete;   // a whole, well-formed character
  bool truncated;  // well-formed so far, but the text ends before the character does
};

Utf8Unit ReadUtf8(std::string_view text, size_t i) {
  const auto lead = static_cast<uint8_t>(text[i]);
  if (lead < 0x80) return {1, true, false};
  size_t need = 0;
  uint8_t second_lo = 0x80, second_hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) second_lo = 0xA0;  // overlong
    if (lead == 0xED) second_hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) second_lo = 0x90;  // overlong
    if (lead == 0xF4) second_hi = 0x8F;  // past U+10FFFF
  } else {
    return {1, false, false};
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= text.size()) return {k, false, true};
    const auto b = static_cast<uint8_t>(text[i + k]);
    if (b < (k == 1 ? second_lo : 0x80) || b > (k == 1 ? second_hi : 0xBF)) return {k, false, false};
  }
  return {need, true, false};
}

// Where `text` ends inside a character that its next bytes could still complete; text.size()
// when it does not.
size_t IncompleteTail(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const Utf8Unit u = ReadUtf8(text, i);
    if (u.truncated) return i;
    i += u.length;
  }
  return text.size();
}

// `text` as valid UTF-8: each ill-formed or unfinished sequence becomes one U+FFFD.
std::string ValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const Utf8Unit u = ReadUtf8(text, i);
    if (u.complete) {
      out.append(text.substr(i, u.length));
    } else {
      out.append(kReplacement);
    }
    i += u.length;
  }
  return out;
}

}  // namespace

TextStream::TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop) : tokenizer_(tokenizer) {
  for (std::string& s : stop) {
    if (!s.empty()) stop_.push_back(std::move(s));
  }
}

TextStream::Piece TextStream::Add(TokenId token, bool may_stop) {
  Piece piece;
  if (stopped_) {
    piece.stopped = true;
    return piece;
  }
  if (tokenizer_ != nullptr) pending_ += tokenizer_->TokenPiece(token, /*render_special=*/false);

  // A stop string anywhere in the held text (a held tail is always a possible stop-string start,
  // so no occurrence can begin in text already released): the earliest one ends the stream.
  size_t stop_at = std::string::npos;
  for (const std::string& s : stop_) stop_at = std::min(stop_at, pending_.find(s));
  if (stop_at != std::string::npos && may_stop) {
    piece.text = ValidUtf8(std::string_view(pending_).substr(0, stop_at));
    piece.stopped = true;
    stopped_ = true;
    pending_.clear();
    released_ += piece.text;
    return piece;
  }
  // Not allowed to stop: every complete occurrence is released as text, so none is found again.
  size_t text_through = 0;
  if (stop_at != std::string::npos) {
    for (const std::string& s : stop_) {
      for (size_t at = pending_.find(s); at != std::string::npos; at = pending_.find(s, at + 1)) {
        text_through = std::max(text_through, at + s.size());
      }
    }
  }

  // Hold back the longest tail that begins some stop string, and an unfinished character.
  const std::string_view open = std::string_view(pending_).substr(text_through);
  size_t hold = IncompleteTail(open);
  for (const std::string& s : stop_) {
    for (size_t len = std::min(s.size() - 1, open.size()); len > 0; --len) {
      if (open.compare(open.size() - len, len, s, 0, len) == 0) {
        hold = std::min(hold, open.size() - len);
        break;
      }
    }
  }
  hold += text_through;
  piece.text = ValidUtf8(std::string_view(pending_).substr(0, hold));
  pending_.erase(0, hold);
  released_ += piece.text;
  return piece;
}

std::string TextStream::Finish() {
  if (stopped_) return {};
  std::string rest = ValidUtf8(pending_);
  pending_.clear();
  released_ += rest;
  return rest;
}

}  // namespace foresight::worker
