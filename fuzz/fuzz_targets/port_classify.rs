//! `braid_ipsec::port::classify` on arbitrary datagrams, checked against RFC 3948 §2 / RFC
//! 7296 §2.23 as the module documents it: a lone 0xFF is a keepalive; four zero bytes are the
//! non-ESP marker and IKE follows; anything else at least an ESP header plus ICV long is ESP.

#![no_main]

use braid_ipsec::esp::{spi_of, ESP_HEADER_LEN, ESP_ICV_LEN};
use braid_ipsec::port::{classify, Datagram, NAT_KEEPALIVE, NON_ESP_MARKER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let marker = data.starts_with(&NON_ESP_MARKER);
    match classify(data) {
        Datagram::Keepalive => assert_eq!(data, NAT_KEEPALIVE),
        Datagram::Ike(ike) => {
            assert!(marker);
            assert_eq!(ike, &data[NON_ESP_MARKER.len()..]);
        }
        Datagram::Esp(esp) => {
            assert_eq!(esp, data);
            assert!(!marker && data.len() >= ESP_HEADER_LEN + ESP_ICV_LEN);
            // A packet classified as ESP always has an SPI, and never the reserved SPI 0.
            assert!(spi_of(esp).is_some_and(|spi| spi != 0));
        }
        Datagram::Malformed => {
            assert!(!marker && data != NAT_KEEPALIVE && data.len() < ESP_HEADER_LEN + ESP_ICV_LEN);
        }
    }
});
