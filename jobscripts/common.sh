# Sourced by the jobscripts after their site block: runs `python -m mpibench.run` under srun or mpirun
# and forwards Slurm's time-limit warning (USR1 to the batch shell) to it, so the file closes cleanly.
#
#   MPIBENCH_LAUNCHER  srun or mpirun (the site block sets the default)
#   SRUN, MPIRUN       the launcher commands with their flags (the site block sets them)
#   PYTHON             the interpreter that has mpibench installed (default: python3)
#   MPIBENCH_DRY_RUN=1 print the command line instead of running it

set -u
mkdir -p results
export MPIBENCH_JOBSCRIPT="$0"                             # its text is stored in the results file

# mpibench_run DEFAULT_CONFIG [mpibench.run flags...]: the user's flags come last and win;
# with --resume the file's own config is used and no defaults are added.
mpibench_run() {
    local config=$1; shift
    local cmd=("${PYTHON:-python3}" -m mpibench.run)
    if [[ " $* " != *" --resume"* ]]; then
        cmd+=(--config "$config" --threads "${SLURM_CPUS_PER_TASK:-0}"
              --output "results/${SLURM_JOB_NAME:-mpibench}-${SLURM_JOB_ID:-local}.h5")
    fi
    cmd+=("$@")
    local launcher
    case ${MPIBENCH_LAUNCHER:-srun} in
        srun)   read -ra launcher <<< "$SRUN"  # srun >= 22.05 does not inherit --cpus-per-task
                launcher+=(${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK}) ;;
        mpirun) read -ra launcher <<< "$MPIRUN"; launcher+=(-n "${SLURM_NTASKS:-1}") ;;
        *) echo "MPIBENCH_LAUNCHER must be srun or mpirun, not '$MPIBENCH_LAUNCHER'" >&2; return 2 ;;
    esac
    echo "job ${SLURM_JOB_ID:-} on ${SLURM_JOB_NODELIST:-}: ${SLURM_NTASKS:-1} ranks," \
         "${SLURM_CPUS_PER_TASK:-all} cores each, ${SLURM_GPUS_ON_NODE:-0} GPUs per node"
    echo "+ ${launcher[*]} ${cmd[*]}"
    [[ -n ${MPIBENCH_DRY_RUN:-} ]] && return 0

    "${launcher[@]}" "${cmd[@]}" &
    launcher_pid=$!
    while kill -0 "$launcher_pid" 2>/dev/null; do wait "$launcher_pid"; done  # the trap interrupts wait
    wait "$launcher_pid"                                                     # the launcher's exit status
}

launcher_pid=
trap 'echo "USR1: time limit near, stopping mpibench (resume with --resume)"
      [[ -n $launcher_pid ]] && kill -USR1 "$launcher_pid"' USR1
