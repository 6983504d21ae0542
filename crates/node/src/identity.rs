//! The node's identity: an Ed25519 key pair made at its first start from the
//! operating system's randomness (`<data>/node.key`, mode 0600: the 32-byte secret
//! in standard base64; `<data>/node.pub`: the 32-byte public key in standard
//! base64). It signs the decision log's chain heads (`audit_heads.rs`).

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;

pub const KEY_FILE: &str = "node.key";
pub const PUBLIC_KEY_FILE: &str = "node.pub";

/// The node's key, read from `data_dir`, or made and written there.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, String> {
    let file = data_dir.join(KEY_FILE);
    let key = match std::fs::read_to_string(&file) {
        Ok(text) => {
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|e| format!("{}: not base64: {e}", file.display()))?;
            let secret: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("{}: an Ed25519 secret key is 32 bytes", file.display()))?;
            SigningKey::from_bytes(&secret)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
            let key = SigningKey::from_bytes(&secret);
            crate::private_file::create_private(&file, STANDARD.encode(secret).as_bytes())
                .map_err(|e| format!("{}: {e}", file.display()))?;
            key
        }
        Err(error) => return Err(format!("{}: {error}", file.display())),
    };
    // The public half is written at every start, so that it always matches.
    let public = format!("{}\n", colony_log::heads::encode_key(&key.verifying_key()));
    let public_file = data_dir.join(PUBLIC_KEY_FILE);
    if std::fs::read_to_string(&public_file).ok().as_deref() != Some(public.as_str()) {
        std::fs::write(&public_file, public)
            .map_err(|e| format!("{}: {e}", public_file.display()))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(made.to_bytes(), again.to_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(
            colony_log::heads::decode_key(&public).unwrap(),
            made.verifying_key()
        );
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        assert!(load_or_create(dir.path()).unwrap_err().contains("node.key"));
    }
}
