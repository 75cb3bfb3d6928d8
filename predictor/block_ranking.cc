#include "predictor/block_ranking.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace foresight::predictor {

void TopIndices(std::span<const float> scores, int64_t k, std::vector<int32_t>* out) {
  out->clear();
  const int64_t n = static_cast<int64_t>(scores.size());
  k = std::min(k, n);
  if (k <= 0) return;
  // The k-th best value by a selection over plain floats (NaN as -inf), then one pass in index
  // order: everything above it, and as many equal to it as are still missing (lower index first).
  thread_local std::vector<float> clean, values;
  clean.resize(n);
  for (int64_t i = 0; i < n; ++i) clean[i] = std::isnan(scores[i]) ? -INFINITY : scores[i];
  values.assign(clean.begin(), clean.end());
  std::nth_element(values.begin(), values.begin() + (k - 1), values.end(), std::greater<float>());
  const float kth = values[k - 1];
  const int64_t above = std::count_if(clean.begin(), clean.end(), [kth](float v) { return v > kth; });
  int64_t equal_wanted = k - above;
  out->reserve(k);
  for (int64_t i = 0; i < n; ++i) {
    if (clean[i] > kth || (clean[i] == kth && equal_wanted-- > 0)) out->push_back(static_cast<int32_t>(i));
  }
}

void SelectTopBlocks(std::span<const float> candidate_scores, const CandidateWindow& window,
                     std::vector<int32_t>* blocks) {
  blocks->clear();
  const int64_t n = window.num_candidates();
  blocks->reserve(window.sink_blocks + window.keep_blocks + (window.num_blocks - window.first_local_block));
  for (int64_t b = 0; b < window.sink_blocks; ++b) blocks->push_back(static_cast<int32_t>(b));
  if (window.KeepsAllCandidates()) {
    for (int64_t b = window.candidate_begin(); b < window.candidate_end(); ++b) {
      blocks->push_back(static_cast<int32_t>(b));
    }
  } else if (window.keep_blocks > 0) {
    thread_local std::vector<int32_t> best;
    TopIndices(candidate_scores.first(n), window.keep_blocks, &best);
    for (int32_t i : best) blocks->push_back(static_cast<int32_t>(window.candidate_begin() + i));
  }
  for (int64_t b = window.first_local_block; b < window.num_blocks; ++b) {
    blocks->push_back(static_cast<int32_t>(b));
  }
}

void SelectAllBlocks(const CandidateWindow& window, std::vector<int32_t>* blocks) {
  blocks->resize(window.num_blocks);
  std::iota(blocks->begin(), blocks->end(), 0);
}

void UnionPerKvHead(const LayerGeometry& geometry, BlockSelection* selection) {
  const int group = geometry.group_size();
  selection->per_kv_head.resize(geometry.kv_heads);
  std::vector<int32_t> merged;
  for (int g = 0; g < geometry.kv_heads; ++g) {
    std::vector<int32_t>& out = selection->per_kv_head[g];
    out.clear();
    for (int j = 0; j < group; ++j) {
      const std::vector<int32_t>& q = selection->per_query_head[g * group + j];
      merged.clear();
      std::set_union(out.begin(), out.end(), q.begin(), q.end(), std::back_inserter(merged));
      out.swap(merged);
    }
  }
}

}  // namespace foresight::predictor
