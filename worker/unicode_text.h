// Unicode helpers for tokenisation: UTF-8 <-> code points, and the character classes that
// pre-tokenisation regexes use (\p{L}, \p{N}, \s as Unicode's White_Space).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace foresight::worker {

// Decodes UTF-8; each invalid byte becomes U+FFFD (as llama.cpp does).
std::vector<uint32_t> DecodeUtf8(std::string_view text);
void AppendUtf8(uint32_t cp, std::string* out);
// Byte length of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
int Utf8SequenceLength(uint8_t lead);

bool IsLetter(uint32_t cp);      // general category L*
bool IsNumber(uint32_t cp);      // general category N*
bool IsWhitespace(uint32_t cp);  // White_Space property

}  // namespace foresight::worker
