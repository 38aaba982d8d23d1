-
outbound127.0.0.1:15001 *outbound8@–	
outbound¡
api.example.com:80api.example.com:80api.example.comÖ
default
/s
 
outbound|80||api.example.comdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codesÃ
"audit.finance.svc.cluster.local:80"audit.finance.svc.cluster.local:80audit.finance.svc.cluster.localaudit.finance:80audit.financeaudit.finance.svc:80audit.finance.svcñ
default
/É
0
,outbound|80||audit.finance.svc.cluster.localdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codes«
 cart.shop.svc.cluster.local:8080 cart.shop.svc.cluster.local:8080cart.shop.svc.cluster.local	cart:8080cartcart.shop:8080	cart.shopcart.shop.svc:8080cart.shop.svcî
default
/Å
.
*outbound|8080||cart.shop.svc.cluster.localdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codesÊ
&reviews.default.svc.cluster.local:9080&reviews.default.svc.cluster.local:9080!reviews.default.svc.cluster.localreviews.default:9080reviews.defaultreviews.default.svc:9080reviews.default.svcö
default
/á
4
0outbound|9080||reviews.default.svc.cluster.localdOKconnect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"S
*outbound|8080||cart.shop.svc.cluster.local0B!
198.18.0.10:8080
appcart":
outbound|80||api.example.com0B
api.example.com:80"F
,outbound|80||audit.finance.svc.cluster.local0B
198.18.2.20:80"L
0outbound|9080||reviews.default.svc.cluster.local0B
198.18.1.10:9080