//! [`FileImage::measure`]: a served image measured again on the file it
//! holds open.

use super::*;

#[test]
fn an_image_is_measured_on_the_file_it_holds_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let image = FileImage::open(&path, FileOptions::default()).unwrap();
    assert_eq!(image.geometry().sectors, 2048);
    assert_eq!(image.measure().unwrap(), 2048);
    // Grown by its owner; a tail shorter than a sector is not counted.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((3 << 20) + 100).unwrap();
    assert_eq!(image.measure().unwrap(), 6144);
    // The path now names another file: the one served is what counts.
    std::fs::rename(&path, dir.path().join("old.img")).unwrap();
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    assert_eq!(image.measure().unwrap(), 6144);
    file.set_len(512).unwrap();
    assert_eq!(image.measure().unwrap(), 1);
}
