"""Column names of the result store, shared by the writer (`bench.store`), the runner and plotting code.

Two tables live in a store (see `bench.store`): cells, one row per attempt at a cell, and curves, one
row per epoch of an attempt. Settings, metrics and measured phases become columns with a prefix, so a
setting called `depth` can never collide with a column of the harness:

    cfg_depth            one column per setting of the cell's full (validated) config
    metric_accuracy      one column per key of CellOutput.metrics
    phase_train_s        seconds spent in ctx.phase("train")
    phase_train_peak_bytes   peak memory inside that phase (GPU allocated on CUDA, RSS on CPU)
    version_torch        one column per package in bench.provenance.PACKAGES
"""

# --- identity of a row -----------------------------------------------------------------------------
EXPERIMENT = "experiment"
CONFIG_HASH = "config_hash"  # dct.config.config_hash of the full config: the cell's identity
LABEL = "label"  # human label built from the axis values, e.g. "depth=2 precision=fp16"
ORIGIN = "origin"  # "axes" (cartesian product) or "include" (an explicit [[include]] cell)
CELL_KIND = "cell_kind"
CONFIG_JSON = "config_json"  # full config, JSON, passwords in URLs redacted
SEED = "seed"
RUN_ID = "run_id"  # one grid invocation
ATTEMPT_ID = "attempt_id"  # one execution of one cell; also names its part files and artifact folder
ARTIFACTS_DIR = "artifacts_dir"  # relative to the store: where the cell wrote images/tokens

# --- outcome ---------------------------------------------------------------------------------------
STATUS = "status"
ERROR = "error"  # "ExceptionType: message" (or how the process died); None when ok
TRACEBACK = "traceback"
# Derived when loading, never written: True when another row of the same cell is the current one
# (the latest ok row, or the latest row when the cell never succeeded).
SUPERSEDED = "superseded"

STATUS_OK = "ok"
STATUS_ERROR = "error"  # the cell raised
STATUS_OOM = "oom"  # torch.cuda.OutOfMemoryError, MemoryError, or torch's CPU allocator failing
STATUS_KILLED = "killed"  # the child process died from a signal (the OS OOM killer sends SIGKILL)
STATUS_TIMEOUT = "timeout"  # ran past --timeout-per-cell and was killed
STATUS_PREDICTED_OOM = "predicted-oom"  # not run: the planner (bench.plan.planner) predicted it does not fit the GPU
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_OOM, STATUS_KILLED, STATUS_TIMEOUT, STATUS_PREDICTED_OOM)
# Metrics of the planner's prediction (bench.plan.planner), on every row of a planned step grid: metric_plan_*
PLAN_PEAK_BYTES = "metric_plan_peak_bytes"  # predicted peak of the cell's device (CUDA: allocated; CPU: saved)
PLAN_FLOPS = "metric_plan_flops"  # FLOPs of one step: forward, backward, recomputation (device-independent)

# --- measurement (bench.measure) -------------------------------------------------------------------
WALL_S = "wall_s"  # the cell's run() call, in the child
PROCESS_WALL_S = "process_wall_s"  # from starting the child to its exit (imports and spawn included)
STEP_TIME_MEDIAN_S = "step_time_median_s"  # median over timed steps after the first WARMUP_STEPS
STEP_TIMES_S = "step_times_s"  # JSON list of every timed step, warm-up included
STEPS_TIMED = "steps_timed"
WARMUP_STEPS = "warmup_steps"
PEAK_MEM_BYTES = "peak_mem_bytes"  # the number to compare: PEAK_GPU_ALLOCATED on CUDA, PEAK_RSS_BYTES on CPU
PEAK_RSS_BYTES = "peak_rss_bytes"  # VmHWM of the cell's own fresh process
PEAK_GPU_ALLOCATED = "peak_gpu_allocated_bytes"  # torch.cuda.max_memory_allocated
PEAK_GPU_RESERVED = "peak_gpu_reserved_bytes"  # torch.cuda.max_memory_reserved
# Derived when loading (bench.store.load_cells): the peak to compare across cells. A cell that measures
# its cost in a "probe" phase (the dct cell: the first steps of one class's training, the same work in
# every cell) is compared on that phase's peak, not on its process's overall peak, which also holds
# whatever else the cell did (a quality cell's bank training and evaluation; a cost cell does neither).
COST_PEAK_BYTES = "cost_peak_bytes"
DEVICE = "device"  # what the cell ran on, e.g. "cpu", "cuda:0"
DEVICE_NAME = "device_name"  # CPU model and cores, or GPU name and memory

# --- provenance (bench.provenance) -----------------------------------------------------------------
GIT_SHA = "git_sha"
GIT_DIRTY = "git_dirty"  # tracked files modified (untracked files are not counted)
HOSTNAME = "hostname"
STARTED_AT = "started_at"  # ISO 8601, UTC, microseconds
FINISHED_AT = "finished_at"
SPEC_FILE = "spec_file"
SPEC_HASH = "spec_hash"  # sha256 of the spec file's bytes, 12 hex
PYTHON_VERSION = "python_version"
# what the spec said about the design (JSON), so a store can be analysed without its spec file
SPEC_AXES = "spec_axes"  # {axis: [values in spec order]}
SPEC_BASELINE = "spec_baseline"  # {axis: the level contrasts are taken against}
SPEC_QUALITY_NEUTRAL = "spec_quality_neutral"  # [axes whose values share one trained token]
JOBS = "jobs"  # cells the runner ran at once
THREADS = "threads"  # torch intra-op threads of the cell's process

# --- quality shared across a quality-neutral axis (bench.shared), derived when loading ------------------
QUALITY_FROM = "quality_from"  # "<config_hash>/<attempt_id>" of the cell whose training gave the quality columns
SHARED_CHECK = "shared_check"  # "ok", "mismatch: ..." (probe trajectories differ) or "missing" (not trained yet)
CUDA_VERSION = "cuda_version"  # torch.version.cuda; None for CPU builds

# --- prefixes of open-ended column families --------------------------------------------------------
CONFIG_PREFIX = "cfg_"
METRIC_PREFIX = "metric_"
PHASE_PREFIX = "phase_"
VERSION_PREFIX = "version_"

# --- curves table ----------------------------------------------------------------------------------
# Besides CONFIG_HASH, ATTEMPT_ID, LABEL and EXPERIMENT, a curve row holds the cell's own keys as they are.
EPOCH = "epoch"
LOSS = "loss"
ACCURACY = "accuracy"
GRAD_NORM = "grad_norm"


def config_col(key: str) -> str:
    return CONFIG_PREFIX + key


def metric_col(key: str) -> str:
    return METRIC_PREFIX + key


def phase_seconds_col(name: str) -> str:
    return f"{PHASE_PREFIX}{name}_s"


def phase_peak_col(name: str) -> str:
    return f"{PHASE_PREFIX}{name}_peak_bytes"


def version_col(package: str) -> str:
    return VERSION_PREFIX + package.replace("-", "_")


def eval_key(spec: str) -> str:
    """The key of an extra eval classifier's columns (metric_acc[<key>]), shared by writer and figures."""
    return spec.replace("world:", "").replace(":", "_").replace("/", "_")
