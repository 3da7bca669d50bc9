// SPDX-License-Identifier: Apache-2.0
#pragma once
// Runs a unit from its directory in the calling process (links libtorch): the body of
// `ubcp-worker run`, and the executor of in-process tests and benchmarks.
//
// Reads manifest.env and checks its payload hash against request.manifest_hash before parsing it
// (request.manifest is not needed), hash-checks the blobs, resumes a fine-tune unit from
// <unit_dir>/checkpoint when that holds a checkpoint of this manifest (anything else there is
// ignored: the unit starts from step 0), writes a checkpoint every request.checkpoint_every
// steps and when should_stop says so, and saves the output in the unit directory
// (unit_journal.h SaveUnitOutput). The memory cap is not enforced in-process.

#include <functional>
#include <memory>

#include "ubcp/client/unit_executor.h"
#include "ubcp/client/worker_protocol.h"

namespace ubcp::client {

// `events` (optional) hears progress, resumed and checkpoint events as they happen.
ExecutionResult ExecuteUnitInDirectory(const ExecutionRequest& request,
                                       const std::function<void(const WorkerEvent&)>& events = {});

std::shared_ptr<UnitExecutor> MakeInProcessExecutor();

}  // namespace ubcp::client
