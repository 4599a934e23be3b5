package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	commonv1 "concord/gen/go/shop/common/v1"
	ordersv1 "concord/gen/go/shop/orders/v1"
	productsv1 "concord/gen/go/shop/products/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	unitPriceMinor = 1999
	initialStock   = 10
	quantity       = 3
)

type placedOrder struct {
	ProductID      string        `json:"productId"`
	ProductStock   int32         `json:"productStock"`
	OrderID        string        `json:"orderId"`
	CustomerID     string        `json:"customerId"`
	State          string        `json:"state"`
	Lines          []orderedLine `json:"lines"`
	Total          money         `json:"total"`
	ReadBackEquals bool          `json:"readBackEquals"`
}

type orderedLine struct {
	ProductID   string `json:"productId"`
	ProductName string `json:"productName"`
	Quantity    int32  `json:"quantity"`
	UnitPrice   money  `json:"unitPrice"`
	LineTotal   money  `json:"lineTotal"`
}

type money struct {
	CurrencyCode string `json:"currencyCode"`
	AmountMinor  int64  `json:"amountMinor"`
}

func moneyOf(m *commonv1.Money) money {
	return money{CurrencyCode: m.GetCurrencyCode(), AmountMinor: m.GetAmountMinor()}
}

func linesOf(lines []*ordersv1.OrderLine) []orderedLine {
	out := make([]orderedLine, 0, len(lines))
	for _, l := range lines {
		out = append(out, orderedLine{l.GetProductId(), l.GetProductName(), l.GetQuantity(), moneyOf(l.GetUnitPrice()), moneyOf(l.GetLineTotal())})
	}
	return out
}

// bearer sends a token with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// dial connects over TLS trusting the CA in $INTEROP_TLS_CA, sending the token
// in the environment variable tokenVariable with every call; in plaintext
// without a token when INTEROP_TLS_CA is not set.
func dial(address, tokenVariable string) (*grpc.ClientConn, error) {
	ca := os.Getenv("INTEROP_TLS_CA")
	if ca == "" {
		return grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	tls, err := credentials.NewClientTLSFromFile(ca, "")
	if err != nil {
		return nil, fmt.Errorf("reading the CA %s: %w", ca, err)
	}
	options := []grpc.DialOption{grpc.WithTransportCredentials(tls)}
	if token := os.Getenv(tokenVariable); token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return grpc.NewClient(address, options...)
}

// placeOrder creates a product, orders three of it and reads the order back.
func placeOrder(ctx context.Context, args []string) (any, error) {
	var productsAddr, ordersAddr, customer string
	err := parseFlags("place-order", args, func(fs *flag.FlagSet) {
		fs.StringVar(&productsAddr, "products", "", "product service host:port")
		fs.StringVar(&ordersAddr, "orders", "", "order service host:port")
		fs.StringVar(&customer, "customer", "", "customer id of the order")
	}, "products", "orders", "customer")
	if err != nil {
		return nil, err
	}
	productsConn, err := dial(productsAddr, "INTEROP_ADMIN_TOKEN")
	if err != nil {
		return nil, err
	}
	defer productsConn.Close()
	ordersConn, err := dial(ordersAddr, "INTEROP_CUSTOMER_TOKEN")
	if err != nil {
		return nil, err
	}
	defer ordersConn.Close()
	products := productsv1.NewProductServiceClient(productsConn)
	orders := ordersv1.NewOrderServiceClient(ordersConn)

	created, err := products.CreateProduct(ctx, &productsv1.CreateProductRequest{
		Name:         "Go teapot",
		Description:  "created through the Go SDK",
		Price:        &commonv1.Money{CurrencyCode: "EUR", AmountMinor: unitPriceMinor},
		InitialStock: initialStock,
	})
	if err != nil {
		return nil, fmt.Errorf("CreateProduct: %w", err)
	}
	product := created.GetProduct()
	if err := firstError(
		check("product name", product.GetName(), "Go teapot"),
		check("product stock", product.GetStock(), int32(initialStock)),
		check("product version", product.GetVersion(), int64(1)),
	); err != nil {
		return nil, err
	}

	placed, err := orders.CreateOrder(ctx, &ordersv1.CreateOrderRequest{
		CustomerId: customer,
		Lines:      []*ordersv1.LineItem{{ProductId: product.GetId(), Quantity: quantity}},
		ShippingAddress: &ordersv1.Address{
			Recipient: "Grace Hopper", Line1: "1 Navy Way", City: "Arlington", PostalCode: "22202", CountryCode: "US",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("CreateOrder: %w", err)
	}
	order := placed.GetOrder()
	lines := order.GetLines()
	if len(lines) != 1 {
		return nil, fmt.Errorf("order lines: got %d, want 1", len(lines))
	}
	if err := firstError(
		check("order customer", order.GetCustomerId(), customer),
		check("order state", order.GetState(), ordersv1.OrderState_ORDER_STATE_PENDING),
		check("line product", lines[0].GetProductId(), product.GetId()),
		check("line product name", lines[0].GetProductName(), "Go teapot"),
		check("line quantity", lines[0].GetQuantity(), int32(quantity)),
		check("line unit price", moneyOf(lines[0].GetUnitPrice()), money{"EUR", unitPriceMinor}),
		check("line total", moneyOf(lines[0].GetLineTotal()), money{"EUR", unitPriceMinor * quantity}),
		check("order total", moneyOf(order.GetTotal()), money{"EUR", unitPriceMinor * quantity}),
		check("order version", order.GetVersion(), int64(1)),
	); err != nil {
		return nil, err
	}

	got, err := orders.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: order.GetId()})
	if err != nil {
		return nil, fmt.Errorf("GetOrder: %w", err)
	}
	// The saga may have confirmed the order already: compare what it does not change.
	readBack, placedAsIs := sagaFree(got.GetOrder()), sagaFree(order)
	if !proto.Equal(readBack, placedAsIs) {
		return nil, fmt.Errorf("GetOrder returned %v, CreateOrder returned %v", readBack, placedAsIs)
	}
	if state := got.GetOrder().GetState(); state != ordersv1.OrderState_ORDER_STATE_PENDING && state != ordersv1.OrderState_ORDER_STATE_CONFIRMED {
		return nil, fmt.Errorf("GetOrder state: got %v, want PENDING or CONFIRMED", state)
	}
	return placedOrder{
		ProductID:      product.GetId(),
		ProductStock:   product.GetStock(),
		OrderID:        order.GetId(),
		CustomerID:     order.GetCustomerId(),
		State:          order.GetState().String(),
		Lines:          linesOf(lines),
		Total:          moneyOf(order.GetTotal()),
		ReadBackEquals: true,
	}, nil
}

// sagaFree is a copy of order without the fields the order saga changes.
func sagaFree(order *ordersv1.Order) *ordersv1.Order {
	c := proto.Clone(order).(*ordersv1.Order)
	c.State, c.Version, c.UpdateTime = ordersv1.OrderState_ORDER_STATE_UNSPECIFIED, 0, nil
	return c
}

type rejection struct {
	Code       int         `json:"code"`
	CodeName   string      `json:"codeName"`
	Message    string      `json:"message"`
	Violations []violation `json:"violations"`
}

type violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

// invalidOrder sends the CreateOrderRequest in FILE (proto JSON) and expects
// INVALID_ARGUMENT with a google.rpc.BadRequest in grpc-status-details-bin.
func invalidOrder(ctx context.Context, args []string) (any, error) {
	var ordersAddr, requestFile string
	err := parseFlags("invalid-order", args, func(fs *flag.FlagSet) {
		fs.StringVar(&ordersAddr, "orders", "", "order service host:port")
		fs.StringVar(&requestFile, "request", "", "CreateOrderRequest as proto JSON")
	}, "orders", "request")
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(requestFile)
	if err != nil {
		return nil, err
	}
	request := &ordersv1.CreateOrderRequest{}
	if err := protojson.Unmarshal(raw, request); err != nil {
		return nil, fmt.Errorf("reading %s: %w", requestFile, err)
	}
	conn, err := dial(ordersAddr, "INTEROP_CUSTOMER_TOKEN")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_, err = ordersv1.NewOrderServiceClient(conn).CreateOrder(ctx, request)
	if err == nil {
		return nil, fmt.Errorf("CreateOrder accepted an invalid request")
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return nil, fmt.Errorf("CreateOrder failed with %v (%s), want InvalidArgument", st.Code(), st.Message())
	}
	result := rejection{Code: int(st.Code()), CodeName: st.Code().String(), Message: st.Message(), Violations: []violation{}}
	for _, detail := range st.Details() {
		if badRequest, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range badRequest.GetFieldViolations() {
				result.Violations = append(result.Violations, violation{v.GetField(), v.GetDescription()})
			}
		}
	}
	if len(result.Violations) == 0 {
		return nil, fmt.Errorf("INVALID_ARGUMENT carried no google.rpc.BadRequest field violations (details: %v)", st.Details())
	}
	return result, nil
}
