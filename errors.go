package buffstreams

import "errors"

// Errors returned by this package. Test for them with [errors.Is]; most are
// wrapped with details such as the offending length. Operations on a closed
// listener or connection return errors that match [net.ErrClosed].
var (
	// ErrMessageTooLarge is returned by Write when a payload exceeds the
	// connection's MaxMessageSize (nothing is sent), and is the cause of
	// closing a connection whose peer declared a length above it.
	ErrMessageTooLarge = errors.New("buffstreams: message exceeds the maximum size")

	// ErrMalformedHeader is the cause of closing a connection whose peer sent
	// a header the framing cannot accept: a negative length, non-zero
	// padding, or a varint that does not end or is overlong.
	ErrMalformedHeader = errors.New("buffstreams: malformed frame header")

	// ErrInvalidConfig is returned by ListenTCP, DialTCP and ParseFraming
	// when a setting is impossible, such as a negative MaxMessageSize.
	ErrInvalidConfig = errors.New("buffstreams: invalid configuration")

	// ErrAlreadyOpened is returned by the Manager when a listener or writer
	// for an address is opened a second time.
	ErrAlreadyOpened = errors.New("buffstreams: address is already opened")

	// ErrNotOpened is returned by the Manager when an address is used that
	// was never opened, or was closed.
	ErrNotOpened = errors.New("buffstreams: address is not opened")

	// ErrAlreadyListening is returned by StartListening and
	// StartListeningAsync when the listener is already accepting.
	ErrAlreadyListening = errors.New("buffstreams: listener is already accepting")

	// ErrCallbackPanic is the cause of closing a connection whose callback
	// panicked. The panic value and stack are logged.
	ErrCallbackPanic = errors.New("buffstreams: callback panicked")
)
