//! Disks of a running VM that change size under it. Two uses: a root disk grown to what the
//! customer ordered, and a pre-booted VM's cloud-init seed, which starts as an empty (0-byte)
//! disk and is filled and grown once the VM is handed to a customer. The guest's virtio-blk
//! driver sees the new capacity through a config-change interrupt.

use crate::error::EngineError;
use crate::qmp::{Qmp, QmpError};
use serde_json::json;

/// The QMP node names of the VM's disk `index` (`qemu_args` names them so).
fn nodes(index: usize) -> (String, String) {
    (format!("disk{index}"), format!("disk{index}-file"))
}

/// Grows disk `index` to `bytes`. QEMU's format layer resizes the file: a qcow2 gains virtual
/// size; a raw file that already holds `bytes` (written by the host beforehand) keeps its
/// content.
///
/// A read-only disk cannot be resized as it is: it is reopened writable for the resize and
/// read-only again after, so the guest (which negotiated a read-only device at boot) never
/// gets to write to it. A failure after the first reopen still tries the second.
pub async fn grow(
    qmp: &Qmp,
    index: usize,
    format: &str,
    bytes: u64,
    read_only: bool,
) -> Result<(), EngineError> {
    let (node, file) = nodes(index);
    let reopen = |ro: bool| json!({"options": [{"driver": format, "node-name": node, "read-only": ro, "file": file}]});
    let resize = json!({"node-name": node, "size": bytes});
    if !read_only {
        qmp.execute("block_resize", Some(resize)).await?;
        return Ok(());
    }
    qmp.execute("blockdev-reopen", Some(reopen(false))).await?;
    let resized: Result<_, QmpError> = qmp.execute("block_resize", Some(resize)).await;
    let back = qmp.execute("blockdev-reopen", Some(reopen(true))).await;
    resized?;
    back?;
    Ok(())
}
