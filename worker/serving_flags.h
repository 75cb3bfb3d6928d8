// AddServingFlags: the serving-policy flags (--policy, --budget, --sink, --local, --dense-layers,
// --query-refine, --weights), registered once for every command that serves a model:
// foresight-worker, `foresight generate` and `foresight-bench decode`. Each flag writes into a
// ServingOptions (worker/serving_options.h), and its default is that struct's value when the flags
// are added, so a command sets its own defaults by filling the struct first.
//
//   ServingOptions serving;                       // ap at 1024, the shipped weights
//   ServingFlags flags = AddServingFlags(app, &serving);
//   flags.policy->description("...");             // a command may say more about a flag
//   ... parse ...
//   FS_RETURN_IF_ERROR(FinishServingFlags(&serving));  // checks --policy, loads --weights
//
// Thread-safety: none; call while building a command line.
#pragma once

#include <CLI/CLI.hpp>

#include "common/status.h"
#include "worker/serving_options.h"

namespace foresight::worker {

// The options AddServingFlags added, for a command to describe, group or count them.
struct ServingFlags {
  CLI::Option* policy = nullptr;
  CLI::Option* budget = nullptr;
  CLI::Option* sink = nullptr;
  CLI::Option* local = nullptr;
  CLI::Option* dense_layers = nullptr;
  CLI::Option* query_refine = nullptr;
  CLI::Option* weights = nullptr;
};

ServingFlags AddServingFlags(CLI::App* app, ServingOptions* options);

// After parsing: the default policy must be one a request can run (errors name --policy), and the
// AttentionPredictor weights are loaded (errors name --weights and the file), whatever the default
// policy, since a request may ask for AttentionPredictor.
Status FinishServingFlags(ServingOptions* options);

}  // namespace foresight::worker
