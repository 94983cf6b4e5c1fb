//! Every RPC's request as it arrives: any bytes decode to the message or to an error (never a
//! panic or an unbounded allocation), and the law's checks the server runs on what decoded —
//! the region, then every text through the normaliser and the lexicon, and every id through
//! the escaping used in messages — never panic and stay bounded.
#![no_main]

use imagesearch_compliance::{describes_child, normalize, quote, RegionPolicy};
use imagesearch_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn law(policy: &RegionPolicy, routing: Option<&pb::Routing>, texts: &[&str], ids: &[&str]) {
    let _ = policy.is_restricted(routing.map(|r| r.region.as_str()));
    for t in texts {
        let n = normalize(t);
        assert_eq!(describes_child(t).is_some(), describes_child(&n).is_some());
    }
    for id in ids {
        // Every kept character may become an escape of up to 10 bytes.
        assert!(quote(id, 64).len() <= 64 * 10 + 40);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let policy = RegionPolicy::parse_list("DE,FR").unwrap();
    match kind % 8 {
        0 => {
            if let Ok(m) = pb::ScoreRequest::decode(bytes) {
                let texts: Vec<&str> = m.pairs.iter().map(|p| p.text.as_str()).collect();
                let ids: Vec<&str> = m
                    .pairs
                    .iter()
                    .filter_map(|p| match p.image.as_ref().and_then(|i| i.source.as_ref()) {
                        Some(pb::image::Source::GalleryId(id)) => Some(id.as_str()),
                        _ => None,
                    })
                    .collect();
                law(&policy, m.routing.as_ref(), &texts, &ids);
            }
        }
        1 => {
            if let Ok(m) = pb::ScoreStreamRequest::decode(bytes) {
                if let Some(r) = &m.request {
                    let texts: Vec<&str> = r.pairs.iter().map(|p| p.text.as_str()).collect();
                    law(&policy, r.routing.as_ref(), &texts, &[]);
                }
            }
        }
        2 => {
            if let Ok(m) = pb::SearchRequest::decode(bytes) {
                law(&policy, m.routing.as_ref(), &[&m.query], &[]);
            }
        }
        3 => {
            if let Ok(m) = pb::GetPhotoRequest::decode(bytes) {
                law(&policy, m.routing.as_ref(), &[], &[&m.id]);
            }
        }
        4 => {
            if let Ok(m) = pb::AddPhotoRequest::decode(bytes) {
                let captions: Vec<&str> = m.captions.iter().map(String::as_str).collect();
                law(&policy, None, &captions, &[&m.id]);
            }
        }
        5 => {
            if let Ok(m) = pb::RemovePhotosRequest::decode(bytes) {
                let ids: Vec<&str> = m.ids.iter().map(String::as_str).collect();
                law(&policy, None, &[], &ids);
            }
        }
        6 => {
            if let Ok(m) = pb::ReviewPhotoRequest::decode(bytes) {
                law(&policy, None, &[&m.note], &[&m.id, &m.reviewer]);
            }
        }
        _ => {
            let _ = pb::SetRolloutRequest::decode(bytes);
            let _ = pb::LoadVersionRequest::decode(bytes);
            let _ = pb::InfoRequest::decode(bytes);
        }
    }
});
