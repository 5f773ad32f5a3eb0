#!/usr/bin/env bash
# mpirun with the settings qtrain needs on one machine: allowed as root (containers and
# CI run as root), oversubscription allowed (more ranks than cores in tests), and the
# shared-memory transport without the ptrace-based single-copy path that containers
# forbid. Usage: scripts/mpirun.sh -np N ./train --config X.ini
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp}
exec mpirun --bind-to none "$@"
