// Turning per-block scores into a BlockSelection, shared by every policy so that ties, sink and
// local blocks and the GQA union are handled one way.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "predictor/selection_budget.h"
#include "predictor/selection_policy.h"

namespace foresight::predictor {

// The indices of the k highest scores, in increasing index order (ties: lower index first; NaN
// ranks lowest); all of them when k >= scores.size().
void TopIndices(std::span<const float> scores, int64_t k, std::vector<int32_t>* out);

// `candidate_scores[i]` scores block window.candidate_begin() + i. Writes the sorted block list:
// the sink blocks, the window.keep_blocks highest-scoring candidates (ties: lower index first;
// NaN ranks lowest) and the local blocks.
void SelectTopBlocks(std::span<const float> candidate_scores, const CandidateWindow& window,
                     std::vector<int32_t>* blocks);

// Every block of the window (dense).
void SelectAllBlocks(const CandidateWindow& window, std::vector<int32_t>* blocks);

// Fills selection->per_kv_head with the union of each KV head's query heads' lists.
void UnionPerKvHead(const LayerGeometry& geometry, BlockSelection* selection);

}  // namespace foresight::predictor
