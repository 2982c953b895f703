#!/bin/bash
# The prototype's wrapper, now a Slurm submitter: picks the jobscript for the device and passes the
# prototype's flags on to mpibench.run.
#   jobscripts/run_benchmark.sh --device cpu --optimal --output results/hpc_cpu_results.jsonl
#   jobscripts/run_benchmark.sh --device cuda --batch-sizes 16,32,64 --mixed-precision
# Flags: --device cpu|cuda|cuda:N (cpu.sbatch or gpu.sbatch)  --batch-sizes A,B,...  --mixed-precision
#        --optimal [RUN.h5]  --output PATH (.h5; a .jsonl path gets the JSON lines beside the .h5)
#        --partition NAME (instead of the jobscript's)
# Any other flag goes to mpibench.run as is (--config, --precisions, ...); sbatch options through
# Slurm's SBATCH_* variables (SBATCH_TIMELIMIT=30, SBATCH_ACCOUNT=proj, SBATCH_WAIT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu sbatch_args=() args=()
while (($#)); do
    [[ $1 == --*=* ]] && set -- "${1%%=*}" "${1#*=}" "${@:2}"   # --flag=value -> --flag value
    case $1 in
        --device|--devices) device=$2; args+=(--devices "$2"); shift 2 ;;
        --output) [[ $2 == *.jsonl ]] && args+=(--jsonl "$2") || args+=(--output "$2"); shift 2 ;;
        --partition) sbatch_args+=(--partition "$2"); shift 2 ;;
        --optimal) args+=(--optimal); [[ ${2:-} == *.h5 ]] && { args+=("$2"); shift; }; shift ;;
        *) args+=("$1"); shift ;;   # --batch-sizes, --mixed-precision and every mpibench.run flag
    esac
done
case $device in
    cpu) script=jobscripts/cpu.sbatch ;;
    cuda*) script=jobscripts/gpu.sbatch ;;
    *) echo "run_benchmark.sh: --device must be cpu, cuda or cuda:N, not '$device'" >&2; exit 2 ;;
esac
command -v sbatch >/dev/null || { echo "run_benchmark.sh: sbatch not found (no Slurm here?)" >&2; exit 2; }
exec sbatch "${sbatch_args[@]}" "$script" "${args[@]}"
