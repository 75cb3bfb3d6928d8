// TextStream: turns a generation's tokens into text that is safe to show as it streams.
//
// Two things are held back until they resolve:
//   - an incomplete UTF-8 sequence (a token may end inside a character; the next completes it),
//     so every piece handed out is valid UTF-8 (JSON strings must be);
//   - a tail that could be the beginning of a stop string: when the stop string completes,
//     generation ends and the stop string itself is never shown (OpenAI's `stop`); when it does
//     not, the held text is released.
//
//   TextStream stream(tokenizer, {"\n\n", "User:"});
//   for (each token) {
//     TextStream::Piece p = stream.Add(token);   // p.text: show now (may be empty)
//     if (p.stopped) break;                       // finish_reason "stop"
//   }
//   std::string rest = stream.Finish();           // held text at the end (never a stop string)
//
// Thread-safety: none; one per generation.
#pragma once

#include <string>
#include <vector>

#include "worker/tokenizer.h"

namespace foresight::worker {

class TextStream {
 public:
  // `tokenizer` may be null: every token's text is then empty. Empty stop strings are ignored.
  TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop);

  struct Piece {
    std::string text;      // newly released text (valid UTF-8)
    bool stopped = false;  // a stop string completed; `text` ends before it
  };
  // `may_stop` false: a stop string that completes with this token is ordinary text (a request's
  // min_tokens not reached yet); one completing later still stops.
  Piece Add(TokenId token, bool may_stop = true);
  // The text still held back (an unfinished stop-string prefix, or an incomplete UTF-8 sequence,
  // which is replaced by U+FFFD), released because the generation ended for another reason.
  std::string Finish();

  // Everything released so far, concatenated.
  const std::string& text() const { return released_; }

 private:
  const Tokenizer* tokenizer_;
  std::vector<std::string> stop_;
  std::string pending_;  // decoded, not yet released
  std::string released_;
  bool stopped_ = false;
};

}  // namespace foresight::worker
