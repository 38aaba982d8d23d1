+
outbound127.0.0.1:15001 *outbound8Ý
outboundÁ
api.example.com:80api.example.com:80api.example.com…
default
/s
 
outbound|80||api.example.comdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codes¶
api.example.com:8080api.example.com:8080‡
default
/u
"
outbound|8080||api.example.comdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codesÓ
db.partner.example:7000db.partner.example:7000db.partner.exampleŠ
default
/x
%
!outbound|7000||db.partner.exampledOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codesý
&reviews.default.svc.cluster.local:9080&reviews.default.svc.cluster.local:9080!reviews.default.svc.cluster.localreviews:9080reviewsreviews.default:9080reviews.defaultreviews.default.svc:9080reviews.default.svcš
default
/‡
4
0outbound|9080||reviews.default.svc.cluster.localdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"~
(outbound|7000|replica|db.partner.example0BJ
198.18.7.2:7000
tierreplica"$spiffe://partner.example/ns/db/sa/dbR"Ž
!outbound|7000||db.partner.example0BJ
198.18.7.1:7000
tierprimary"$spiffe://partner.example/ns/db/sa/dbBJ
198.18.7.2:7000
tierreplica"$spiffe://partner.example/ns/db/sa/dbRM"/etc/partner/ca.pem*/etc/partner/client.pem2/etc/partner/client-key.pem">
outbound|8080||api.example.com0B
api.example.com:8080"…
outbound|80||api.example.com0B
api.example.com:443RHapi.example.comapi.example.com""/etc/ssl/certs/ca-certificates.crt"©
2outbound|9080|v1|reviews.default.svc.cluster.local0Bk
127.0.0.1:19081
appreviews
versionv1"5spiffe://cluster.local/ns/default/sa/bookinfo-reviews(R"<
2outbound|9080|v2|reviews.default.svc.cluster.local0R"­
2outbound|9080|v3|reviews.default.svc.cluster.local0Rs5outbound_.9080_.v3_.reviews.default.svc.cluster.local8spiffe://cluster.local/ns/default/sa/bookinfo-reviews-v3"§
0outbound|9080||reviews.default.svc.cluster.local0Bk
127.0.0.1:19081
appreviews
versionv1"5spiffe://cluster.local/ns/default/sa/bookinfo-reviews(R