"""File names and the trial attributes the sweeper and its jobs share through the storage."""

SUMMARY_FILE = "summary.csv"
TRIALS_FILE = "trials.csv"
RESULTS_FILE = "optimization_results.yaml"
DEFAULT_STORAGE_FILE = "optuna.db"

#: Trial system attrs written by the sweeper (read by the job and by other workers).
ATTR_PRUNER = "snnbench:pruner"  # the pruner settings the job builds
ATTR_WORKER = "snnbench:worker"  # host:pid:start of the sweep process that asked the trial
ATTR_SKIPPED = "snnbench:skipped"  # why a trial was recorded FAIL without running
ATTR_HEARTBEAT = "snnbench:heartbeat_interval"  # s between the job's heartbeats (RDB only)
#: host:pid:start of the job process while it runs the trial (and keeps its heartbeat);
#: null before the job starts and after it ends (the sweeper keeps the heartbeat then).
ATTR_JOB = "snnbench:job"
#: Trial user attrs (visible in trials.csv and ``study.trials_dataframe()``).
ATTR_ERROR = "error"
ATTR_RUN_DIR = "run_dir"
#: Study user attr: the settings that define the study (see ``study.study_definition``).
ATTR_DEFINITION = "snnbench:definition"
