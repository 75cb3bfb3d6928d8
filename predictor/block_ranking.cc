#include "predictor/block_ranking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace foresight::predictor {

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
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const float* s = candidate_scores.data();
    auto better = [s](int32_t a, int32_t b) {
      const float sa = std::isnan(s[a]) ? -INFINITY : s[a];
      const float sb = std::isnan(s[b]) ? -INFINITY : s[b];
      return sa > sb || (sa == sb && a < b);
    };
    std::nth_element(order.begin(), order.begin() + (window.keep_blocks - 1), order.end(), better);
    order.resize(window.keep_blocks);
    std::sort(order.begin(), order.end());
    for (int32_t i : order) blocks->push_back(static_cast<int32_t>(window.candidate_begin() + i));
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
