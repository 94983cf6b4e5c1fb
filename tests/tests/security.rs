//! The law and the data against a hostile caller and an operator's faults, over loopback on the
//! real server: disguised child words on every RPC that takes text, gallery writes without or
//! with the wrong credential, bytes re-added under a new id, reviews, oversized answers and
//! requests, escaped echoes, precise codes, a full disk, TLS with client certificates, and
//! `kill -9` during gallery writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use imagesearch_client::{Client, ClientConfig, SearchOptions, Slot};
use imagesearch_proto::metadata::AUTHORIZATION;
use imagesearch_proto::v1 as pb;
use imagesearch_tests::{captioned_photos, png_header_claiming, test_photos, trained_repository, Server, ADMIN_TOKEN, WRITER_TOKEN};
use pb::gallery_client::GalleryClient;
use pb::image_search_client::ImageSearchClient;
use tonic::{Code, Request};

/// One tiny version, trained once for the whole test binary.
fn repo() -> PathBuf {
    static REPO: OnceLock<tempfile::TempDir> = OnceLock::new();
    REPO.get_or_init(|| trained_repository(1)).path().join("models")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn routing(region: &str) -> Option<pb::Routing> {
    Some(pb::Routing { region: region.into(), ..Default::default() })
}

/// Child words in the disguises a hostile caller uses; each must be read as the plain word.
fn disguised() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for word in ["kids", "boy", "toddler", "girls", "children"] {
        let chars: Vec<char> = word.chars().collect();
        let inside = |sep: &str| format!("{}{sep}{}", chars[0], chars[1..].iter().collect::<String>());
        let fullwidth: String = chars.iter().map(|c| char::from_u32(*c as u32 - 'a' as u32 + 0xFF41).unwrap()).collect();
        let cyrillic: String = word.replace('o', "\u{043E}").replace('e', "\u{0435}").replace('i', "\u{0456}").replace('a', "\u{0430}").replace('c', "\u{0441}");
        let combining: String = chars.iter().flat_map(|c| [*c, '\u{0301}']).collect();
        let spaced = chars.iter().map(char::to_string).collect::<Vec<_>>().join(" ");
        let dotted = chars.iter().map(char::to_string).collect::<Vec<_>>().join(".");
        let leet = word.replace('o', "0").replace('i', "1").replace('e', "3");
        for (text, how) in [
            (inside("\u{200B}"), "zero-width space"),
            (inside("\u{00AD}"), "soft hyphen"),
            (inside("\u{2060}"), "word joiner"),
            (inside("\u{200C}"), "ZWNJ"),
            (inside("\u{202E}"), "bidi override"),
            (fullwidth, "fullwidth"),
            (cyrillic, "Cyrillic lookalikes"),
            (combining, "combining accents"),
            (spaced, "spaced letters"),
            (dotted, "dotted letters"),
            (leet, "leetspeak"),
            (inside("\u{00AD}") + "\u{200B}", "soft hyphen + zero width"),
        ] {
            if text != word {
                out.push((format!("{text} playing in the park"), how));
            }
        }
    }
    out
}

#[test]
fn disguised_child_words_are_withheld_on_every_rpc_that_takes_text() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let photo = test_photos(1).remove(0).1;
        let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let pair = |text: &str| pb::Pair { image: Some(pb::Image { source: Some(pb::image::Source::Data(photo.clone())) }), text: text.into() };
        for (text, how) in disguised() {
            for region in ["DE", ""] {
                let score = raw.score(pb::ScoreRequest { pairs: vec![pair(&text)], routing: routing(region) }).await.unwrap_err();
                assert_eq!(score.code(), Code::PermissionDenied, "Score {how} {text:?} in {region:?}: {}", score.message());
                let search = raw
                    .search(pb::SearchRequest { query: text.clone(), k: 3, routing: routing(region), include_photos: false, ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(search.query_withheld.is_some() && search.hits.is_empty(), "Search {how} {text:?} in {region:?} served");
            }
        }
        // ScoreStream: each disguised request fails alone with PERMISSION_DENIED.
        let requests: Vec<pb::ScoreStreamRequest> = disguised()
            .iter()
            .enumerate()
            .map(|(i, (text, _))| pb::ScoreStreamRequest { request_id: i as u64, request: Some(pb::ScoreRequest { pairs: vec![pair(text)], routing: routing("FR") }) })
            .collect();
        let n = requests.len();
        let mut answers = raw.score_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
        let mut seen = 0;
        while let Some(a) = answers.message().await.unwrap() {
            match a.outcome {
                Some(pb::score_stream_response::Outcome::Error(e)) => assert_eq!(e.code, Code::PermissionDenied as i32, "{}", e.message),
                other => panic!("stream request {} was scored: {other:?}", a.request_id),
            }
            seen += 1;
        }
        assert_eq!(seen, n);
        // In an open region the model reads the disguised text as the plain one: same score.
        let plain = raw.score(pb::ScoreRequest { pairs: vec![pair("kids playing in the park")], routing: routing("US") }).await.unwrap().into_inner();
        for text in ["k\u{200B}ids playing in the park", "ｋｉｄｓ playing in the park", "kíds playing in the park"] {
            let s = raw.score(pb::ScoreRequest { pairs: vec![pair(text)], routing: routing("US") }).await.unwrap().into_inner();
            assert_eq!(s.scores, plain.scores, "{text:?} is not read as the plain text");
        }
        // Captions: a disguised child caption restricts its photo.
        let photos = test_photos(6);
        let adds: Vec<pb::AddPhotoRequest> = photos
            .iter()
            .zip(disguised().into_iter().step_by(11))
            .map(|((id, bytes), (caption, _))| pb::AddPhotoRequest { id: id.clone(), data: bytes.clone(), captions: vec![caption], ..Default::default() })
            .collect();
        let n = adds.len() as u64;
        let added = c.add_photos(adds).await.unwrap();
        assert_eq!(added.restricted as u64, n, "{added:?}");
        assert_eq!(c.gallery_stats().await.unwrap().restricted_by_captions, n);
        for (id, _) in photos.iter().take(n as usize) {
            assert!(c.get_photo(id, Some("DE")).await.unwrap().is_none(), "{id} shown in DE");
        }
    });
}

#[test]
fn gallery_writes_need_the_writer_token_and_captions_never_clear_a_flag() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        let mut g = GalleryClient::connect(server.endpoint()).await.unwrap();
        let (kids, _) = captioned_photos(1);
        let (kid_id, kid_bytes, kid_caps) = kids[0].clone();
        let add = |id: &str, bytes: &[u8], caps: Vec<String>| vec![pb::AddPhotoRequest { id: id.into(), data: bytes.to_vec(), captions: caps, ..Default::default() }];
        // No token, the admin token, a wrong token: UNAUTHENTICATED, nothing stored.
        for token in [None, Some(ADMIN_TOKEN), Some("wrong")] {
            let e = g.add_photos(with_token(tokio_stream::iter(add("x", &kid_bytes, vec![])), token)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {}", e.message());
            let e = g.remove_photos(with_token(pb::RemovePhotosRequest { ids: vec!["x".into()] }, token)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated);
        }
        assert_eq!(c.gallery_stats().await.unwrap().photos, 0);
        // The attack: a restricted photo's bytes under a new id with a harmless caption.
        c.add_photos(add(&kid_id, &kid_bytes, kid_caps)).await.unwrap();
        let r = c.add_photos(add("innocent.jpg", &kid_bytes, vec!["a dog on the grass".into()])).await.unwrap();
        assert_eq!(r.restricted, 1, "{r:?}");
        let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let got = raw.get_photo(pb::GetPhotoRequest { id: "innocent.jpg".into(), routing: routing("DE") }).await.unwrap().into_inner();
        assert!(matches!(got.content, Some(pb::get_photo_response::Content::Withheld(_))), "the re-added bytes were shown in DE");
        // The same in one stream, harmless caption first.
        let mut both = add("first.jpg", &kid_bytes, vec!["a dog".into()]);
        both.extend(add("second.jpg", &kid_bytes, vec!["a little girl".into()]));
        assert_eq!(c.add_photos(both).await.unwrap().restricted, 2);
        // Reviews need the admin token; a photo whose own captions describe a child stays restricted.
        let review = |id: &str, restricted: bool| pb::ReviewPhotoRequest { id: id.into(), restricted, reviewer: "qa".into(), note: "test".into() };
        for token in [None, Some(WRITER_TOKEN)] {
            let e = g.review_photo(with_token(review("innocent.jpg", false), token)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated);
        }
        let e = c.review_photo(&kid_id, false, "qa", "").await.unwrap_err();
        assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
        // A review clear of harmless-captioned bytes applies to every id with them but the one
        // whose own captions describe a child.
        let r = c.review_photo("innocent.jpg", false, "qa", "statue").await.unwrap();
        assert_eq!(r.flag, "reviewed-clear");
        assert!(c.get_photo("innocent.jpg", Some("DE")).await.unwrap().is_some());
        assert!(c.get_photo(&kid_id, Some("DE")).await.unwrap().is_none());
        assert!(c.get_photo("second.jpg", Some("DE")).await.unwrap().is_none());
        // The kid's bytes under 4 ids: innocent.jpg and first.jpg cleared; the kid's own and
        // second.jpg ("a little girl") stay restricted by their captions.
        let stats = c.gallery_stats().await.unwrap();
        assert_eq!((stats.photos, stats.cleared_by_review, stats.restricted_by_captions), (4, 2, 2), "{stats:?}");
        assert!(server.log_text().contains("photo flag reviewed"));
    });
}

/// A PNG of noise, `side`×`side` pixels (about 3 bytes a pixel: it does not compress).
fn noise_png(side: u32, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn answers_requests_echoes_and_codes_are_bounded_and_precise() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        // Two 12 MB photos: an answer with both would pass the 32 MB message limit.
        let big: Vec<pb::AddPhotoRequest> =
            (0..2).map(|i| pb::AddPhotoRequest { id: format!("big-{i}.png"), data: noise_png(2000, i + 1), captions: vec!["a red wall".into()], ..Default::default() }).collect();
        assert!(big.iter().all(|p| p.data.len() > 11_000_000));
        assert_eq!(c.add_photos(big.clone()).await.unwrap().added, 2);
        let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap().max_decoding_message_size(64 << 20);
        let r = raw.search(pb::SearchRequest { query: "a wall".into(), k: 2, routing: routing("US"), include_photos: true, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(r.hits.len(), 2);
        assert_eq!(r.photos_without_bytes, 1, "one photo past the answer's byte budget comes as a reference");
        // The client library fetches what the budget left out.
        let found = c.search_with("a wall", Some("US"), 2, &SearchOptions { include_photos: true, ..Default::default() }).await.unwrap();
        for slot in &found.hits {
            let Slot::Photo(p) = slot else { panic!("withheld in US") };
            let want = &big.iter().find(|b| b.id == p.id).unwrap().data;
            assert_eq!(&p.data, want, "{}", p.id);
        }
        // Four 6000x6000 images in one Score: refused before any decoding, naming the limit.
        let pairs = (0..4)
            .map(|_| pb::Pair { image: Some(pb::Image { source: Some(pb::image::Source::Data(png_header_claiming(6000, 6000))) }), text: "a dog".into() })
            .collect();
        let e = raw.score(pb::ScoreRequest { pairs, routing: routing("US") }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("144000000 pixels") && e.message().contains("--max-request-pixels"), "{}", e.message());
        // Ids: invisible, bidi, control and over-long ids are rejected by name.
        let photo = test_photos(1).remove(0).1;
        let bad_ids = ["\u{200B}\u{200B}", "\u{202E}\u{2066}", "a\nforged log line", &"x".repeat(300)];
        let adds = bad_ids.iter().map(|id| pb::AddPhotoRequest { id: id.to_string(), data: photo.clone(), captions: vec![], ..Default::default() }).collect();
        let r = c.add_photos(adds).await.unwrap();
        assert_eq!((r.added, r.rejected.len()), (0, 4), "{r:?}");
        for x in &r.rejected {
            assert!(!x.id.chars().any(|c| c.is_control() || imagesearch_compliance::is_ignorable(c)), "rejected id echoed raw: {:?}", x.id);
            assert!(x.id.len() < 200, "rejected id echoed whole");
        }
        // A 100,000-character id: NOT_FOUND with a short, escaped message; no forged log line.
        let long = format!("evil\nFORGED LINE {}", "y".repeat(100_000));
        let e = raw.get_photo(pb::GetPhotoRequest { id: long, routing: routing("US") }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().len() < 400 && e.message().contains("\\n") && !e.message().contains('\n'), "{}", e.message());
        let log = server.log_text();
        assert!(log.contains("FORGED LINE"), "the refusal naming the id was not logged, so the next check proves nothing:\n{log}");
        assert!(!log.lines().any(|l| l.starts_with("FORGED LINE")), "a newline in an id forged a log line");
        // 40,000 unknown ids in one RemovePhotos.
        let ids: Vec<String> = (0..40_000).map(|i| format!("missing-{i}")).collect();
        let r = c.remove_photos(ids).await.unwrap();
        assert_eq!((r.removed, r.not_found.len()), (0, 40_000));
        // A rollout with a percentage but no canary.
        let e = c.set_rollout(1, 0, 50).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
        // A JPEG with a corrupted middle is corrupt, not "truncated".
        let mut broken = photo.clone();
        let mid = broken.len() / 2;
        broken[mid] = 0xFF;
        broken[mid + 1] = 0x37;
        let e = c.score(vec![(imagesearch_client::ImageRef::Bytes(broken), "a dog".into())], Some("US")).await.unwrap_err();
        assert!(e.to_string().contains("invalid marker"), "{e}");
        c.info().await.expect("still serving");
    });
}

#[test]
fn an_oversized_message_is_out_of_range_on_every_call() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &["--max-message-bytes", "1000000"]);
    rt().block_on(async {
        let _ = server.ready_client().await;
        let big = noise_png(700, 3);
        assert!(big.len() > 1_000_000);
        let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let pair = pb::Pair { image: Some(pb::Image { source: Some(pb::image::Source::Data(big.clone())) }), text: "a dog".into() };
        let e = raw.score(pb::ScoreRequest { pairs: vec![pair], routing: routing("US") }).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "Score: {}", e.message());
        let mut g = GalleryClient::connect(server.endpoint()).await.unwrap();
        let photos = vec![pb::AddPhotoRequest { id: "big.png".into(), data: big, captions: vec![], ..Default::default() }];
        let e = g.add_photos(with_token(tokio_stream::iter(photos), Some(WRITER_TOKEN))).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "AddPhotos: {}", e.message());
    });
}

/// A tmpfs of `kib` KiB on a new directory (the test runs as root, as CI does); unmounted on drop.
struct TinyDisk(tempfile::TempDir);

impl TinyDisk {
    fn mount(kib: u32) -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"]).arg(dir.path()).status().is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed: the disk-full test needs root (as in CI)");
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_is_resource_exhausted_searches_go_on_and_acknowledged_photos_survive() {
    let disk = TinyDisk::mount(1536);
    let srv = disk.0.path().join("srv");
    let logs = tempfile::tempdir().unwrap();
    let photos = test_photos(40);
    let mut acked = Vec::new();
    {
        // The first server logs onto the tiny disk too: a log line it cannot write must not break
        // a call.
        let mut server = Server::start_logging_to(&repo(), &srv, &disk.0.path().join("first.log"), &[]);
        rt().block_on(async {
            let c = server.ready_client().await;
            let mut full = false;
            for (id, bytes) in &photos {
                match c.add_photos(vec![pb::AddPhotoRequest { id: id.clone(), data: bytes.clone(), captions: vec![], ..Default::default() }]).await {
                    Ok(r) if r.added == 1 => acked.push((id.clone(), bytes.clone())),
                    Ok(r) => panic!("{r:?}"),
                    Err(e) => {
                        assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
                        assert!(e.to_string().contains("disk is full") && !e.to_string().contains(srv.to_str().unwrap()), "{e}");
                        full = true;
                    }
                }
            }
            assert!(full && acked.len() >= 3, "the disk filled ({} acknowledged)", acked.len());
            let r = c.search("a dog", Some("US"), 3).await.unwrap();
            assert_eq!(r.hits.len(), 3, "searches work on a full disk");
            // Space comes back: writes are acknowledged again.
            let gone: Vec<String> = acked.drain(..acked.len() / 2).map(|(id, _)| id).collect();
            c.remove_photos(gone).await.unwrap();
            let (id, bytes) = photos.last().unwrap().clone();
            c.remove_photos(vec![id.clone()]).await.unwrap();
            c.add_photos(vec![pb::AddPhotoRequest { id: id.clone(), data: bytes.clone(), captions: vec![], ..Default::default() }]).await.unwrap();
            acked.push((id, bytes));
        });
        server.kill9();
    }
    let mut server = Server::start_logging_to(&repo(), &srv, &logs.path().join("second.log"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        assert_eq!(c.gallery_stats().await.unwrap().photos, acked.len() as u64);
        for (id, bytes) in &acked {
            let p = c.get_photo(id, Some("US")).await.unwrap().unwrap_or_else(|| panic!("{id} withheld in US"));
            assert_eq!(&p.data, bytes, "{id}");
        }
    });
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, sans) in [("server", vec!["localhost".to_string(), "127.0.0.1".to_string()]), ("client", vec!["imagesearch-client".to_string()])] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[test]
fn tls_with_client_certificates_and_tokens_from_files() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    certificates(d);
    std::fs::write(d.join("writer.token"), "file-writer-token\n").unwrap();
    let arg = |f: &str| d.join(f).to_string_lossy().to_string();
    let flags = [
        "--tls-cert".to_string(), arg("server.pem"), "--tls-key".into(), arg("server.key"), "--tls-client-ca".into(), arg("ca.pem"),
        "--writer-token-file".into(), arg("writer.token"),
    ];
    // Started by hand: Server::start passes tokens as flags, this server reads its writer token
    // from a file and has no admin token.
    let port = imagesearch_tests::free_port();
    let log = d.join("server.log");
    let mut child = Command::new(imagesearch_tests::bin("imagesearch-server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "off", "--device", "cpu", "--restricted-regions", "DE"])
        .arg("--models")
        .arg(repo())
        .arg("--data-dir")
        .arg(d.join("srv"))
        .args(&flags)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let tls_config = |identity: bool| {
        let mut cfg = ClientConfig::new(format!("https://localhost:{port}"));
        cfg.tls_ca_pem = Some(std::fs::read(d.join("ca.pem")).unwrap());
        if identity {
            cfg.tls_identity_pem = Some((std::fs::read(d.join("client.pem")).unwrap(), std::fs::read(d.join("client.key")).unwrap()));
        }
        cfg.writer_token = Some("file-writer-token".into());
        cfg.connect_timeout = Duration::from_secs(5);
        cfg
    };
    rt().block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let c = loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited with {status}: {}", std::fs::read_to_string(&log).unwrap());
            }
            if let Ok(c) = Client::connect(tls_config(true)).await {
                if c.health("").await.ok() == Some(1) {
                    break c;
                }
            }
            assert!(std::time::Instant::now() < deadline, "not ready: {}", std::fs::read_to_string(&log).unwrap());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let photos = test_photos(2);
        let adds = photos.iter().map(|(id, data)| pb::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: vec![], ..Default::default() }).collect();
        assert_eq!(c.add_photos(adds).await.unwrap().added, 2, "the writer token from the file works");
        assert_eq!(c.search("a dog", Some("US"), 2).await.unwrap().hits.len(), 2);
        // Without a client certificate, or in plain text, nothing is served.
        let no_cert = match Client::connect(tls_config(false)).await {
            Ok(c) => c.info().await.is_err(),
            Err(_) => true,
        };
        assert!(no_cert, "a client without a certificate was served");
        let plain = match Client::connect(ClientConfig::new(format!("http://127.0.0.1:{port}"))).await {
            Ok(c) => c.info().await.is_err(),
            Err(_) => true,
        };
        assert!(plain, "a plain-text client was served");
        // Refused for what they lack, not because the server went away.
        c.info().await.expect("the client with a certificate is still served");
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn corrupt_and_unreadable_versions_get_clear_statuses_and_serving_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let models = data.path().join("models");
    std::fs::create_dir_all(models.join("scorer")).unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(repo().join("encoders")).unwrap(), models.join("encoders")).unwrap();
    for v in ["1", "2", "3", "4"] {
        let dst = models.join("scorer").join(v);
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(repo().join("scorer/1")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
        }
    }
    // 2: its manifest cannot be read as a file; 3: a model file emptied; 4: a manifest that is not JSON.
    std::fs::remove_file(models.join("scorer/2/manifest.json")).unwrap();
    std::fs::create_dir(models.join("scorer/2/manifest.json")).unwrap();
    std::fs::write(models.join("scorer/3/scorer.pt"), b"").unwrap();
    std::fs::write(models.join("scorer/4/manifest.json"), b"{ not json").unwrap();
    let mut server = Server::start(&models, &data.path().join("srv"), &["--versions", "1"]);
    rt().block_on(async {
        let c = server.ready_client().await;
        for (v, code, says) in [
            // A directory without a readable manifest is not a version.
            (2, Code::NotFound, "not in the model repository"),
            (3, Code::FailedPrecondition, "sha256"),
            (4, Code::FailedPrecondition, "invalid manifest"),
        ] {
            let e = c.load_version(v).await.unwrap_err();
            assert_eq!(e.code(), Some(code), "version {v}: {e}");
            assert!(e.to_string().contains(says), "version {v}: '{e}' does not say '{says}'");
            assert_eq!(c.search("a dog", Some("US"), 1).await.unwrap().version, 1, "version 1 still serves");
        }
        let e = c.load_version(9).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    });
}

/// Peak resident memory of a process, in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    kb / 1024.0
}

/// Not a test: the figures in README "Security and reliability"
/// (`cargo test -p imagesearch-tests --test security measure -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_bounded_work() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo(), &data.path().join("srv"), &[]);
    rt().block_on(async {
        let c = server.ready_client().await;
        c.add_photos(vec![pb::AddPhotoRequest { id: "warm.jpg".into(), data: test_photos(1).remove(0).1, captions: vec![], ..Default::default() }]).await.unwrap();
        let before = peak_rss_mb(server.child.id());
        let n: u32 = std::env::var("MEASURE_PHOTOS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
        let photos: Vec<pb::AddPhotoRequest> =
            (0..n).map(|i| pb::AddPhotoRequest { id: format!("big-{i}.png"), data: noise_png(2240, i + 10), captions: vec![], ..Default::default() }).collect();
        let mb: usize = photos.iter().map(|p| p.data.len()).sum::<usize>() >> 20;
        let t = std::time::Instant::now();
        let r = c.add_photos(photos).await.unwrap();
        println!("AddPhotos: {n} photos, {mb} MB in one stream: added {} in {:.1} s; peak RSS {before:.0} MB before, {:.0} MB after", r.added, t.elapsed().as_secs_f64(), peak_rss_mb(server.child.id()));
        let ids: Vec<String> = (0..40_000).map(|i| format!("missing-{i}")).collect();
        let t = std::time::Instant::now();
        let r = c.remove_photos(ids).await.unwrap();
        println!("RemovePhotos: 40,000 unknown ids answered in {:.3} s ({} not found)", t.elapsed().as_secs_f64(), r.not_found.len());
        let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap();
        let pairs = (0..4)
            .map(|_| pb::Pair { image: Some(pb::Image { source: Some(pb::image::Source::Data(png_header_claiming(6000, 6000))) }), text: "a dog".into() })
            .collect();
        let t = std::time::Instant::now();
        let e = raw.score(pb::ScoreRequest { pairs, routing: routing("US") }).await.unwrap_err();
        println!("Score with four 6000x6000 PNGs: {:?} in {:.3} s", e.code(), t.elapsed().as_secs_f64());
    });
}
