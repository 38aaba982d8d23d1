o
egress|127.0.0.1:5432127.0.0.1:5432 8b@
orders-db.internal∏*%
!outbound|5432||orders-db.internaldô
outbound0.0.0.0:15001 *outbound8@bç
shop/tcp-echo®F198.18.40.14
0outbound|9000|v1|tcp-echo.shop.svc.cluster.localP4
0outbound|9000|v2|tcp-echo.shop.svc.cluster.localbg
tcp-echo.shop.svc.cluster.local©F198.18.40.12
.outbound|9001||tcp-echo.shop.svc.cluster.localdbV
shop/payments-apiªapi.payments.example&
"outbound|443||api.payments.exampledbY
api.payments.exampleªapi.payments.example&
"outbound|443||api.payments.exampledb@
orders-db.internal∏*%
!outbound|5432||orders-db.internald

outbound"F
"outbound|443||api.payments.example0B
api.payments.example:443"S
!outbound|5432||orders-db.internal0B
198.18.0.71:5432B
198.18.0.72:5432"ù
0outbound|9000|v1|tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.61:9000
apptcp-echo
versionv1"*spiffe://cluster.local/ns/shop/sa/tcp-echo("ù
0outbound|9000|v2|tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.62:9000
apptcp-echo
versionv2"*spiffe://cluster.local/ns/shop/sa/tcp-echo("ˇ
.outbound|9000||tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.61:9000
apptcp-echo
versionv1"*spiffe://cluster.local/ns/shop/sa/tcp-echo(Bb
198.18.0.62:9000
apptcp-echo
versionv2"*spiffe://cluster.local/ns/shop/sa/tcp-echo("ù
0outbound|9001|v1|tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.61:9001
apptcp-echo
versionv1"*spiffe://cluster.local/ns/shop/sa/tcp-echo("ù
0outbound|9001|v2|tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.62:9001
apptcp-echo
versionv2"*spiffe://cluster.local/ns/shop/sa/tcp-echo("ˇ
.outbound|9001||tcp-echo.shop.svc.cluster.local –0Bb
198.18.0.61:9001
apptcp-echo
versionv1"*spiffe://cluster.local/ns/shop/sa/tcp-echo(Bb
198.18.0.62:9001
apptcp-echo
versionv2"*spiffe://cluster.local/ns/shop/sa/tcp-echo(