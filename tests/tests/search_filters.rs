//! Filters on what is stored with a photo (the uploader's attributes, the added time) and
//! keyword search over captions fused with the vector ranking, through both stores: the local
//! store with the in-memory index, and PostgreSQL with the HNSW index (filters in SQL,
//! PostgreSQL full-text search). The law holds through both: a filter never uncovers a
//! restricted photo and a caption that describes a child is never a keyword route to one.

use std::collections::{HashMap, HashSet};

use imagesearch_client::{Client, SearchOptions, Slot};
use imagesearch_proto::v1 as pb;
use imagesearch_proto::DISCLAIMER;
use imagesearch_tests::{captioned_photos, status_code, test_photos, trained_repository, Postgres, Server};
use tonic::Code;

/// One photo to add: id, bytes, captions, attributes.
type Upload = (String, Vec<u8>, Vec<String>, Vec<(&'static str, &'static str)>);

fn request(u: &Upload) -> pb::AddPhotoRequest {
    let attributes: HashMap<String, String> = u.3.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    pb::AddPhotoRequest { id: u.0.clone(), data: u.1.clone(), captions: u.2.clone(), attributes }
}

/// Twelve plain photos (six of ana's, three in her tokyo album; six of bo's), one captioned
/// with a word no other caption has, and a child's photo of ana's whose caption has another.
fn gallery() -> (Vec<Upload>, Upload) {
    let uploads = test_photos(12)
        .into_iter()
        .enumerate()
        .map(|(i, (id, bytes))| {
            let owner = if i < 6 { "ana" } else { "bo" };
            let album = if i < 3 { "tokyo" } else { "paris" };
            let captions = if i == 3 { vec!["a zebra crossing in the snow".to_string()] } else { vec![] };
            (id, bytes, captions, vec![("owner", owner), ("album", album)])
        })
        .collect();
    let (mut kids, _) = captioned_photos(1);
    let (id, bytes, _) = kids.remove(0);
    let kid = (id, bytes, vec!["a little girl holding a quokka".to_string()], vec![("owner", "ana"), ("album", "tokyo")]);
    (uploads, kid)
}

fn opts(filter: Option<pb::SearchFilter>, keyword_weight: f32) -> SearchOptions {
    SearchOptions { filter, keyword_weight, ..Default::default() }
}

fn owner_is(owners: &[&str]) -> Option<pb::SearchFilter> {
    let c = pb::AttributeCondition { key: "owner".into(), any_of: owners.iter().map(|s| s.to_string()).collect() };
    Some(pb::SearchFilter { attributes: vec![c], ..Default::default() })
}

/// The ids shown of a search, and how many slots were withheld.
async fn search(c: &Client, q: &str, region: &str, k: u32, o: &SearchOptions) -> (Vec<String>, usize) {
    let (shown, withheld, _) = search_flags(c, q, region, k, o).await;
    (shown, withheld)
}

/// [`search`], and which of the shown photos are restricted (shown only in open regions).
async fn search_flags(c: &Client, q: &str, region: &str, k: u32, o: &SearchOptions) -> (Vec<String>, usize, HashSet<String>) {
    let r = c.search_with(q, Some(region), k, o).await.unwrap();
    let mut shown = Vec::new();
    let mut withheld = 0;
    let mut restricted = HashSet::new();
    for s in r.hits {
        match s {
            Slot::Photo(p) => {
                // GetPhoto from a restricted region withholds exactly the restricted photos.
                if c.get_photo(&p.id, Some("DE")).await.unwrap().is_none() {
                    restricted.insert(p.id.clone());
                }
                shown.push(p.id)
            }
            Slot::Withheld { disclaimer, .. } => {
                assert_eq!(disclaimer, DISCLAIMER);
                withheld += 1;
            }
        }
    }
    (shown, withheld, restricted)
}

/// Everything the two stores must do alike, on a server whose gallery is `gallery()`.
async fn filters_keywords_and_the_law(c: &Client, uploads: &[Upload], kid: &Upload, added_between: i64) {
    let id = |i: usize| uploads[i].0.clone();
    let ana: HashSet<String> = (0..6).map(id).collect();

    // Attribute filters: one value, any of two, two conditions. Restricted photos that pass (the
    // child's, and those the detector flags) keep their slots as the disclaimer in DE.
    let (us, w, restricted) = search_flags(c, "a photo", "US", 20, &opts(owner_is(&["ana"]), 0.0)).await;
    assert_eq!((us.len(), w), (7, 0));
    assert!(us.iter().all(|i| ana.contains(i) || *i == kid.0), "{us:?}");
    assert!(restricted.contains(&kid.0));
    let (de, w) = search(c, "a photo", "DE", 20, &opts(owner_is(&["ana"]), 0.0)).await;
    assert_eq!((de.len(), w), (7 - restricted.len(), restricted.len()));
    assert!(de.iter().all(|i| !restricted.contains(i)), "{de:?}");
    let (both, _) = search(c, "a photo", "US", 20, &opts(owner_is(&["ana", "bo"]), 0.0)).await;
    assert_eq!(both.len(), 13);
    let tokyo = pb::AttributeCondition { key: "album".into(), any_of: vec!["tokyo".into()] };
    let mut two = owner_is(&["ana"]).unwrap();
    two.attributes.push(tokyo);
    let (t, _) = search(c, "a photo", "US", 20, &opts(Some(two), 0.0)).await;
    assert_eq!(t.iter().cloned().collect::<HashSet<_>>(), [id(0), id(1), id(2), kid.0.clone()].into_iter().collect());
    let (none, w) = search(c, "a photo", "US", 20, &opts(owner_is(&["nobody"]), 0.0)).await;
    assert_eq!((none.len(), w), (0, 0));

    // Added time: the first batch (photos 0..6) was added before `added_between`.
    let before = Some(pb::SearchFilter { added_before_unix_ms: added_between, ..Default::default() });
    let (first, _) = search(c, "a photo", "US", 20, &opts(before, 0.0)).await;
    assert_eq!(first.into_iter().collect::<HashSet<_>>(), ana);
    let after = Some(pb::SearchFilter { added_from_unix_ms: added_between, ..Default::default() });
    let (later, _) = search(c, "a photo", "US", 20, &opts(after, 0.0)).await;
    assert_eq!(later.len(), 7);

    // Keywords alone (weight 1): only the photo whose caption has the word; none of bo's.
    let (z, _) = search(c, "zebra", "US", 5, &opts(None, 1.0)).await;
    assert_eq!(z, vec![id(3)]);
    let (z, _) = search(c, "zebras", "DE", 5, &opts(owner_is(&["bo"]), 1.0)).await;
    assert!(z.is_empty(), "{z:?}");
    // Fused (0.5): the keyword hit comes first, and every photo is still ranked.
    let (f, _) = search(c, "zebra", "US", 20, &opts(None, 0.5)).await;
    assert_eq!((f[0].as_str(), f.len()), (id(3).as_str(), 13));

    // The law: keywords never rank a restricted photo in DE, not even as a disclaimer; a
    // caption that describes a child is no route there. In the US they find the photo.
    let (_, _, flagged) = search_flags(c, "zebra", "US", 5, &opts(None, 1.0)).await;
    let (z, w) = search(c, "zebra", "DE", 5, &opts(None, 1.0)).await;
    let want: Vec<String> = if flagged.contains(&id(3)) { vec![] } else { vec![id(3)] };
    assert_eq!((z, w), (want, 0));
    let (q, w) = search(c, "quokka", "DE", 5, &opts(None, 1.0)).await;
    assert_eq!((q.len(), w), (0, 0));
    let (q, _) = search(c, "quokka", "US", 5, &opts(None, 1.0)).await;
    assert_eq!(q, vec![kid.0.clone()]);

    // Bad filters and weights are INVALID_ARGUMENT naming the problem.
    let bad = pb::AttributeCondition { key: "Owner!".into(), any_of: vec!["x".into()] };
    let e = c.search_with("a photo", Some("US"), 3, &opts(Some(pb::SearchFilter { attributes: vec![bad], ..Default::default() }), 0.0)).await.unwrap_err();
    assert_eq!(status_code(&e), Code::InvalidArgument);
    assert!(e.to_string().contains("Owner!"), "{e}");
    for w in [1.5, -0.1, f32::NAN] {
        let e = c.search_with("a photo", Some("US"), 3, &opts(None, w)).await.unwrap_err();
        assert_eq!(status_code(&e), Code::InvalidArgument, "{w}");
        assert!(e.to_string().contains("keyword_weight"), "{e}");
    }
}

/// Fused pages reach every photo once; a photo added between pages is not in later ones.
async fn fused_pages_are_stable(c: &Client, extra: &Upload) {
    let mut seen = Vec::new();
    let mut o = opts(None, 0.5);
    loop {
        let r = c.search_with("zebra", Some("US"), 4, &o).await.unwrap();
        for s in &r.hits {
            let Slot::Photo(p) = s else { panic!("withheld in the US") };
            seen.push(p.id.clone());
        }
        if seen.len() == 4 {
            c.add_photos(vec![request(extra)]).await.unwrap();
        }
        if r.next_page_token.is_empty() {
            break;
        }
        o.page_token = r.next_page_token;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a hit on two pages: {seen:?}");
    assert_eq!(seen.len(), 13);
    assert!(!seen.contains(&extra.0));
    // A token is bound to its weight and filter.
    let first = c.search_with("zebra", Some("US"), 4, &opts(None, 0.5)).await.unwrap();
    let reused = SearchOptions { page_token: first.next_page_token, ..opts(None, 0.25) };
    let e = c.search_with("zebra", Some("US"), 4, &reused).await.unwrap_err();
    assert_eq!(status_code(&e), Code::InvalidArgument, "{e}");
}

/// Adds the gallery in two batches; returns a time between them.
async fn add_gallery(c: &Client, uploads: &[Upload], kid: &Upload) -> i64 {
    let first: Vec<_> = uploads[..6].iter().map(request).collect();
    assert_eq!(c.add_photos(first).await.unwrap().added, 6);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut rest: Vec<_> = uploads[6..].iter().map(request).collect();
    rest.push(request(kid));
    let mut bad = request(&uploads[0]);
    bad.id = "bad-attributes.jpg".into();
    bad.attributes.insert("BAD KEY".into(), "x".into());
    rest.push(bad);
    let r = c.add_photos(rest).await.unwrap();
    assert_eq!(r.added, 7);
    assert!(r.restricted >= 1, "the child's photo is restricted by its caption");
    assert_eq!(r.rejected.len(), 1);
    assert!(r.rejected[0].reason.contains("BAD KEY"), "{:?}", r.rejected);
    between
}

#[test]
fn filters_and_keywords_in_the_local_store_survive_a_restart() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let data = tempfile::tempdir().unwrap();
    let (uploads, kid) = gallery();
    let extra = (String::from("extra.jpg"), test_photos(13).remove(12).1, vec!["another zebra".to_string()], vec![]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut server = Server::start(&models, data.path(), &[]);
    let between = rt.block_on(async {
        let c = server.ready_client().await;
        let between = add_gallery(&c, &uploads, &kid).await;
        filters_keywords_and_the_law(&c, &uploads, &kid, between).await;
        between
    });
    assert!(server.terminate().success());
    // Attributes, added times and the keyword index come back from the log.
    let mut server = Server::start(&models, data.path(), &[]);
    rt.block_on(async {
        let c = server.ready_client().await;
        filters_keywords_and_the_law(&c, &uploads, &kid, between).await;
        fused_pages_are_stable(&c, &extra).await;
    });
}

#[test]
fn filters_and_keywords_in_postgres_run_in_sql() {
    let repo = trained_repository(1);
    let models = repo.path().join("models");
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let args = ["--store", "postgres", "--database-url", url.as_str(), "--search-index", "postgres-hnsw"];
    let data = tempfile::tempdir().unwrap();
    let (uploads, kid) = gallery();
    let extra = (String::from("extra.jpg"), test_photos(13).remove(12).1, vec!["another zebra".to_string()], vec![]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut server = Server::start(&models, &data.path().join("a"), &args);
    let between = rt.block_on(async {
        let c = server.ready_client().await;
        add_gallery(&c, &uploads, &kid).await
    });
    assert!(server.terminate().success());
    // What the database holds: attributes as jsonb, the child's caption kept out of the open text.
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos WHERE attributes @> '{\"owner\": \"ana\"}'"), "7");
    let kid_open = pg.psql("gallery", &format!("SELECT open_caption_text FROM photos WHERE id = '{}'", kid.0));
    assert_eq!(kid_open, "");
    let mut server = Server::start(&models, &data.path().join("b"), &args);
    rt.block_on(async {
        let c = server.ready_client().await;
        filters_keywords_and_the_law(&c, &uploads, &kid, between).await;
        fused_pages_are_stable(&c, &extra).await;
    });
}
