//! A private PKI made with openssl, and CA bundles in the seed's format.

use std::path::Path;
use std::process::Command;

use base64::Engine;

pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A root CA, an intermediate CA, and a server certificate for 127.0.0.1
/// signed by the intermediate: a private PKI as platform teams run them.
pub fn private_pki(dir: &Path) {
    private_pki_for(dir, "IP:127.0.0.1,DNS:localhost");
}

/// [`private_pki`] with a server certificate for `sans` (openssl's
/// subjectAltName syntax).
pub fn private_pki_for(dir: &Path, sans: &str) {
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let new_key_and_csr = |name: &str, subject: &str| {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        openssl(
            dir,
            &[
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr,
                "-subj", subject,
            ],
        );
    };
    let sign = |name: &str, ca: &str, ext: &str| {
        let (csr, pem, ca_pem, ca_key) = (
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{ca}.pem"),
            format!("{ca}.key"),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    };
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    new_key_and_csr("int", "/CN=Test Intermediate CA");
    sign("int", "root", "ca.ext");
    new_key_and_csr("leaf", "/CN=gantry");
    sign("leaf", "int", "server.ext");
    let chain = std::fs::read_to_string(dir.join("leaf.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("int.pem")).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
}

/// The bundle made exactly as the seed says: a JSON file, then `base64 -w0 < ca-certs.json`.
pub fn seed_bundle(dir: &Path, pems: &[&str]) -> String {
    let entries: Vec<String> = pems
        .iter()
        .map(|p| {
            format!(
                "\"{}\"",
                base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(dir.join(p)).unwrap())
            )
        })
        .collect();
    std::fs::write(
        dir.join("ca-certs.json"),
        format!(
            "{{\n  \"caCertificates\": [\n    {}\n  ]\n}}\n",
            entries.join(",\n    ")
        ),
    )
    .unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg("base64 -w0 < ca-certs.json")
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}
