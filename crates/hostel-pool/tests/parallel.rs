//! No pool lock across device I/O on the read path: while one volume's read waits inside its
//! device, another volume is read, written and flushed.

mod common;

use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hostel_pool::{BlockDevice, FileDevice, Pool};

/// Where the gated read says it arrived, and waits to be let through.
type Armed = Arc<Mutex<Option<(Sender<()>, Receiver<()>)>>>;

/// A file whose next read, once armed, stops inside the device until released.
#[derive(Debug)]
struct Gate {
    inner: FileDevice,
    armed: Armed,
}

impl BlockDevice for Gate {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let armed = self.armed.lock().unwrap().take();
        if let Some((entered, release)) = armed {
            entered.send(()).unwrap();
            release
                .recv_timeout(Duration::from_secs(30))
                .expect("released");
        }
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.inner.write_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

#[test]
fn a_read_waiting_in_its_device_does_not_hold_up_another_volume() {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a"], 32 << 20);
    let armed = Arc::new(Mutex::new(None));
    let dev = Gate {
        inner: FileDevice::open(&paths[0]).unwrap(),
        armed: Arc::clone(&armed),
    };
    let pool = Arc::new(Pool::create(vec![Box::new(dev) as Box<dyn BlockDevice>], opts()).unwrap());
    pool.create_volume("one", 1 << 20, 1).unwrap();
    pool.create_volume("two", 1 << 20, 1).unwrap();
    pool.write("one", 0, &[1u8; 8192]).unwrap();
    pool.flush().unwrap();

    let (entered_tx, entered) = channel();
    let (release, release_rx) = channel();
    *armed.lock().unwrap() = Some((entered_tx, release_rx));
    let p = Arc::clone(&pool);
    let reader = std::thread::spawn(move || {
        let mut b = vec![0u8; 8192];
        p.read("one", 0, &mut b).unwrap();
        b
    });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the read reached its device");
    // The first read is inside the device now. Another volume is served meanwhile.
    let (done_tx, done) = channel();
    let p = Arc::clone(&pool);
    let other = std::thread::spawn(move || {
        p.write("two", 4096, &[2u8; 4096]).unwrap();
        let mut b = vec![0u8; 4096];
        p.read("two", 4096, &mut b).unwrap();
        p.flush().unwrap();
        done_tx.send(b).unwrap();
    });
    let got = done
        .recv_timeout(Duration::from_secs(30))
        .expect("the other volume was held up by a read waiting in its device");
    assert!(got.iter().all(|&x| x == 2));
    release.send(()).unwrap();
    let b = reader.join().unwrap();
    assert!(b.iter().all(|&x| x == 1));
    other.join().unwrap();
}
