//! The storage process the daemon runs (`hostel storage-backend`): the host's one pool, its
//! volumes, and the vhost-user sockets serving them, driven over a JSON-lines control socket
//! (`hostel_storage_proto`). It runs in a session of its own and outlives the daemon; the
//! daemon notices a restarted one by its control socket's identity and serves every attached
//! volume again (QEMU's `reconnect=1` finds the socket and the guest carries on).
//!
//! One request at a time takes the state lock: control operations are rare and each
//! commits the pool's metadata before it answers, so the answer is the truth after a kill.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hostel_pool::{BlockDevice, CreateOptions, FileDevice, Pool, PoolError, RemirrorWorker};
use hostel_storage_proto::{
    DeviceStatus, ErrorKind, PoolInfo, PoolStatus, RemirrorProgress, Request, Response,
    VolumeStatus, MAX_LINE,
};

use crate::{Disk, DiskServer};

/// How long a control client may take to send its line (a stuck client must not hold a
/// thread for ever).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("device {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
}

struct Opened {
    pool: Arc<Pool>,
    _remirror: RemirrorWorker,
}

#[derive(Default)]
struct State {
    pool: Option<Opened>,
    servers: HashMap<String, DiskServer>,
}

/// The storage process: opens the pool on `devices` (none: no pool until the first
/// `device_add`) and answers on `control` until killed.
pub fn run(control: &Path, devices: &[PathBuf]) -> Result<(), ControlError> {
    let mut state = State::default();
    if !devices.is_empty() {
        // A device that cannot be opened (gone, renamed, failed) is left out: the pool
        // opens degraded on the others and re-mirrors what it held.
        let mut opened_devs = Vec::new();
        let mut first_err = None;
        for d in devices {
            match open_devices(std::slice::from_ref(d)) {
                Ok(mut v) => opened_devs.append(&mut v),
                Err(e) => {
                    tracing::error!(error = %e, "device left out of the pool");
                    first_err.get_or_insert(e);
                }
            }
        }
        if opened_devs.is_empty() {
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        let pool = Arc::new(Pool::open(opened_devs)?);
        state.pool = Some(opened(pool)?);
    }
    let _ = std::fs::remove_file(control);
    let listener = UnixListener::bind(control).map_err(|source| ControlError::Listen {
        path: control.to_path_buf(),
        source,
    })?;
    tracing::info!(control = %control.display(), devices = devices.len(), "storage serving");
    let state = Arc::new(Mutex::new(state));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let st = Arc::clone(&state);
        std::thread::Builder::new()
            .name("storage-ctl".into())
            .spawn(move || serve_client(conn, &st))
            .map_err(ControlError::Thread)?;
    }
    Ok(())
}

fn opened(pool: Arc<Pool>) -> Result<Opened, ControlError> {
    let remirror = RemirrorWorker::spawn(Arc::clone(&pool)).map_err(ControlError::Thread)?;
    Ok(Opened {
        pool,
        _remirror: remirror,
    })
}

fn open_devices(paths: &[PathBuf]) -> Result<Vec<Box<dyn BlockDevice>>, ControlError> {
    paths
        .iter()
        .map(|p| {
            FileDevice::open(p)
                .map(|d| Box::new(d) as Box<dyn BlockDevice>)
                .map_err(|source| ControlError::Open {
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

fn serve_client(conn: UnixStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut rd = BufReader::new(conn);
    loop {
        let mut line = Vec::new();
        // Bounded: a line longer than MAX_LINE ends the connection.
        match (&mut rd)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > MAX_LINE => {
                let _ = reply(
                    &mut out,
                    &Response::err(ErrorKind::Invalid, "request line too long"),
                );
                return;
            }
            Ok(_) => {}
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                handle(&mut st, req)
            }
            Err(e) => Response::err(ErrorKind::Invalid, format!("bad request: {e}")),
        };
        if reply(&mut out, &resp).is_err() {
            return;
        }
    }
}

fn reply(out: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

fn kind_of(e: &PoolError) -> ErrorKind {
    match e {
        PoolError::NoSuchVolume(_)
        | PoolError::NoSuchSnapshot { .. }
        | PoolError::NoBaseSnapshot { .. } => ErrorKind::NotFound,
        PoolError::VolumeExists(_)
        | PoolError::SnapshotExists { .. }
        | PoolError::DuplicateDevice { .. } => ErrorKind::Exists,
        PoolError::BadName { .. }
        | PoolError::BadSize { .. }
        | PoolError::BadCopies { .. }
        | PoolError::BadBackup(_)
        | PoolError::DeviceTooSmall { .. }
        | PoolError::ForeignDevice { .. } => ErrorKind::Invalid,
        PoolError::OutOfSpace { .. } => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

fn pool_err(e: PoolError) -> Response {
    Response::err(kind_of(&e), e)
}

fn volume_status(v: hostel_pool::VolumeInfo) -> VolumeStatus {
    VolumeStatus {
        name: v.name,
        size: v.size,
        allocated: v.allocated,
        copies: v.copies,
        degraded_clusters: v.degraded_clusters,
        snapshots: v.snapshots,
    }
}

fn status(st: &State) -> PoolStatus {
    let mut served: Vec<String> = st.servers.keys().cloned().collect();
    served.sort();
    let pool = st.pool.as_ref().map(|o| {
        let p = &o.pool;
        let r = p.remirror_status();
        let cluster = hostel_pool::CLUSTER_SIZE;
        PoolInfo {
            uuid: p.uuid().to_string(),
            generation: p.generation(),
            needs_scrub: p.needs_scrub(),
            devices: p
                .devices()
                .into_iter()
                .map(|d| DeviceStatus {
                    uuid: d.uuid.to_string(),
                    path: d.name,
                    failed: d.failed,
                    bytes: d.clusters.saturating_mul(cluster),
                    free_bytes: d.free_clusters.saturating_mul(cluster),
                })
                .collect(),
            volumes: p.volumes().into_iter().map(volume_status).collect(),
            remirror: RemirrorProgress {
                running: r.running,
                to_do: r.to_do,
                done: r.done,
                last_error: r.last_error,
            },
        }
    });
    PoolStatus { pool, served }
}

fn with_volume(pool: &Pool, name: &str) -> Response {
    match pool.volume(name) {
        Ok(v) => Response {
            volume: Some(volume_status(v)),
            ..Response::ok()
        },
        Err(e) => pool_err(e),
    }
}

fn handle(st: &mut State, req: Request) -> Response {
    if let Request::DeviceAdd { path } = &req {
        return device_add(st, path);
    }
    if let Request::Status = req {
        return Response {
            status: Some(status(st)),
            ..Response::ok()
        };
    }
    let Some(pool) = st.pool.as_ref().map(|o| Arc::clone(&o.pool)) else {
        return Response::err(
            ErrorKind::NoPool,
            "this host has no storage pool (add a device)",
        );
    };
    let done = |r: Result<(), PoolError>, name: &str| match r {
        Ok(()) => with_volume(&pool, name),
        Err(e) => pool_err(e),
    };
    match req {
        Request::Status | Request::DeviceAdd { .. } => Response::ok(),
        Request::VolumeCreate { name, size, copies } => {
            done(pool.create_volume(&name, size, copies).map(|_| ()), &name)
        }
        Request::VolumeDelete { name } => {
            if let Some(s) = st.servers.remove(&name) {
                s.stop();
            }
            match pool.delete_volume(&name) {
                Ok(()) | Err(PoolError::NoSuchVolume(_)) => Response::ok(),
                Err(e) => pool_err(e),
            }
        }
        Request::VolumeResize { name, size } => done(pool.resize_volume(&name, size), &name),
        Request::VolumeStatus { name } => with_volume(&pool, &name),
        Request::SnapshotCreate { volume, snapshot } => {
            done(pool.snapshot_create(&volume, &snapshot), &volume)
        }
        Request::SnapshotRestore { volume, snapshot } => {
            done(pool.snapshot_restore(&volume, &snapshot), &volume)
        }
        Request::SnapshotDelete { volume, snapshot } => {
            done(pool.snapshot_delete(&volume, &snapshot), &volume)
        }
        Request::Clone {
            volume,
            snapshot,
            new,
        } => done(
            pool.clone_volume(&volume, &snapshot, &new).map(|_| ()),
            &new,
        ),
        Request::Serve {
            volume,
            socket,
            queues,
        } => {
            if st.servers.contains_key(&volume) {
                return Response::ok();
            }
            if let Some(dir) = socket.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let disk = Disk {
                pool: Arc::clone(&pool),
                serial: volume.chars().take(20).collect(),
                volume: volume.clone(),
                queues,
            };
            match DiskServer::start(disk, &socket) {
                Ok(s) => {
                    st.servers.insert(volume, s);
                    Response::ok()
                }
                Err(crate::ServeError::Volume(e)) => pool_err(e),
                Err(crate::ServeError::Queues(q)) => {
                    Response::err(ErrorKind::Invalid, format!("queues {q}: 1 to 64"))
                }
                Err(e) => Response::err(ErrorKind::Other, e),
            }
        }
        Request::Unserve { volume } => {
            if let Some(s) = st.servers.remove(&volume) {
                s.stop();
            }
            Response::ok()
        }
        Request::BackupExport {
            volume,
            snapshot,
            base,
            path,
        } => backup_export(&pool, &volume, &snapshot, base.as_deref(), &path),
        Request::BackupRestore { path, name } => {
            let copies = pool
                .devices()
                .iter()
                .filter(|d| !d.failed)
                .count()
                .clamp(1, 2) as u8;
            match std::fs::File::open(&path) {
                Err(e) => Response::err(ErrorKind::Invalid, format!("{}: {e}", path.display())),
                Ok(f) => {
                    let mut rd = std::io::BufReader::new(f);
                    match pool.restore_backup(&mut rd, &name, copies) {
                        Ok(_) => with_volume(&pool, &name),
                        Err(e) => pool_err(e),
                    }
                }
            }
        }
    }
}

fn backup_export(
    pool: &Pool,
    volume: &str,
    snap: &str,
    base: Option<&str>,
    path: &Path,
) -> Response {
    // Written aside and renamed when whole: a cut export never looks like a backup.
    let tmp = path.with_extension("partial");
    let run = || -> Result<(), Box<Response>> {
        let other = |e: &dyn std::fmt::Display| Box::new(Response::err(ErrorKind::Other, e));
        let f = std::fs::File::create(&tmp).map_err(|e| {
            Box::new(Response::err(
                ErrorKind::Invalid,
                format!("{}: {e}", tmp.display()),
            ))
        })?;
        let mut w = std::io::BufWriter::new(f);
        pool.export_backup(volume, snap, base, &mut w)
            .map_err(|e| Box::new(pool_err(e)))?;
        let f = w.into_inner().map_err(|e| other(e.error()))?;
        f.sync_all().map_err(|e| other(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| other(&e))?;
        Ok(())
    };
    match run() {
        Ok(()) => Response::ok(),
        Err(r) => {
            let _ = std::fs::remove_file(&tmp);
            *r
        }
    }
}

fn device_add(st: &mut State, path: &Path) -> Response {
    let dev = match FileDevice::open(path) {
        Ok(d) => d,
        Err(e) => {
            return Response::err(
                ErrorKind::Invalid,
                format!("device {}: {e}", path.display()),
            )
        }
    };
    let shown = path.display().to_string();
    let r = match &st.pool {
        Some(o) => {
            if o.pool
                .devices()
                .iter()
                .any(|d| d.name.as_deref() == Some(shown.as_str()))
            {
                return Response::err(
                    ErrorKind::Exists,
                    format!("device {shown} is in the pool already"),
                );
            }
            o.pool
                .add_device(Box::new(dev), CreateOptions::default())
                .map(|_| ())
        }
        None => match Pool::create(vec![Box::new(dev)], CreateOptions::default()) {
            Ok(p) => match opened(Arc::new(p)) {
                Ok(o) => {
                    st.pool = Some(o);
                    Ok(())
                }
                Err(e) => return Response::err(ErrorKind::Other, e),
            },
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(()) => Response {
            status: Some(status(st)),
            ..Response::ok()
        },
        Err(e) => pool_err(e),
    }
}
