// Launchers for the matrix products of linear layers and attention, and the bias gradient.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>Which operands of a matrix product are transposed. All matrices are row-major.</summary>
public enum GemmLayout
{
    /// <summary><c>C = A . B</c>: A (m, k), B (k, n). A linear layer's forward pass.</summary>
    NN = GemmKernels.LayoutNN,
    /// <summary><c>C = A . B^T</c>: A (m, k), B (n, k). A linear layer's input gradient <c>dx = dy . W^T</c>.</summary>
    NT = GemmKernels.LayoutNT,
    /// <summary><c>C = A^T . B</c>: A (k, m), B (k, n). A linear layer's weight gradient <c>dW += x^T . dy</c>.</summary>
    TN = GemmKernels.LayoutTN,
}

/// <summary>Which kernel a <see cref="GemmOps"/> runs its products with.</summary>
public enum GemmPath
{
    /// <summary><see cref="GemmKernels.GemmDirectKernel"/>: no shared memory, no barriers (the CPU accelerator's path).</summary>
    Direct,

    /// <summary><see cref="GemmKernels.GemmKernel"/>: run-time geometry, 4 x 4 outputs per thread.</summary>
    SharedTiles,

    /// <summary>The <c>GemmLargeTiles*Kernel</c>s: 128 x 128 tiles, 8 x 8 outputs per thread, one kernel per layout (the GPU path).</summary>
    LargeTiles,
}

/// <summary>
/// Matrix products and the bias gradient, loaded once per accelerator. On GPUs whose groups hold 256 threads the
/// product runs the large-tile kernels (<see cref="GemmKernels.GemmLargeTilesNNKernel"/> and its NT and TN
/// siblings): 128 x 128 tiles, 8 x 8 outputs per thread, K staged 8 at a time through double-buffered shared memory;
/// a product whose matrices are too large for their 32-bit offsets falls back to <see cref="GemmKernels.GemmKernel"/>
/// with 16 x 16 threads, 4 x 4 outputs each, which is also the path of smaller GPUs. On the CPU accelerator it runs
/// <see cref="GemmKernels.GemmDirectKernel"/>: there every simulated thread is an OS thread and a group barrier costs
/// hundreds of microseconds, so register blocking without shared memory is several times faster.
/// Results are deterministic for a given accelerator and geometry (no atomics).
/// <para>16-bit storage: every product also takes <see cref="Bf16"/> or <see cref="Half"/> operands, with C (and the
/// bias) either of the same 16-bit type (forward and input-gradient products) or FP32 (the weight gradient, which
/// accumulates over micro-batches in FP32). The same kernels run, instantiated over the storage types (loaded on first
/// use): operands are widened to FP32 on load, products accumulate in FP32 registers, and each result is rounded once
/// into C. The bias gradient likewise reads 16-bit <c>dOut</c> into an FP32 <c>dBias</c>.</para>
/// </summary>
public sealed class GemmOps
{
    private readonly Accelerator _accelerator;
    private readonly Kernels<float, float> _fp32;
    private readonly Lazy<Kernels<Bf16, Bf16>> _bf16;
    private readonly Lazy<Kernels<Bf16, float>> _bf16ToFp32;
    private readonly Lazy<Kernels<Half, Half>> _fp16;
    private readonly Lazy<Kernels<Half, float>> _fp16ToFp32;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Bf16>, int, int, int, float>> _biasBackwardBf16;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Half>, int, int, int, float>> _biasBackwardFp16;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, float> _biasBackward;
    private readonly int _threadsX;
    private readonly int _threadsY;
    private readonly int _tileK;
    private readonly int _biasColumns;
    private readonly int _biasGroup;
    private bool _largeTiles;

    /// <summary>The product kernel of the chosen path and, on the large-tile path, one kernel per layout, for one pair of storage types.</summary>
    private sealed class Kernels<TIn, TOut> where TIn : unmanaged where TOut : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims> Gemm = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>[]? Large;
    }

    private Kernels<TIn, TOut> Load<TIn, SIn, TOut, SOut>()
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
    {
        var a = _accelerator;
        var k = new Kernels<TIn, TOut>
        {
            Gemm = UsesSharedMemoryTiles
                ? a.LoadKernel<ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>(GemmKernels.GemmGenericKernel<TIn, SIn, TOut, SOut>)
                : a.LoadKernel<ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>(GemmKernels.GemmDirectGenericKernel<TIn, SIn, TOut, SOut>),
        };
        if (_largeTiles)
            k.Large =
            [
                a.LoadKernel<ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>(GemmKernels.GemmLargeTilesNNGenericKernel<TIn, SIn, TOut, SOut>),
                a.LoadKernel<ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>(GemmKernels.GemmLargeTilesNTGenericKernel<TIn, SIn, TOut, SOut>),
                a.LoadKernel<ArrayView<TOut>, ArrayView<TIn>, ArrayView<TIn>, ArrayView<TOut>, GemmDims>(GemmKernels.GemmLargeTilesTNGenericKernel<TIn, SIn, TOut, SOut>),
            ];
        return k;
    }

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator and picks the kernel and geometry for it.</summary>
    public GemmOps(Backend backend)
        : this(backend, DefaultPath(backend.Accelerator))
    {
    }

    /// <summary>
    /// Loads the kernels for <paramref name="path"/>: <see cref="GemmPath.LargeTiles"/> needs groups of
    /// <see cref="GemmKernels.LargeTileThreads"/> threads (and keeps the shared-tile kernel for products too large for it).
    /// </summary>
    public GemmOps(Backend backend, GemmPath path)
        : this(backend, FallbackSide(backend.Accelerator, path), FallbackSide(backend.Accelerator, path), FallbackSide(backend.Accelerator, path) == 0 ? 0 : 16)
    {
        if (path != GemmPath.LargeTiles)
            return;
        if (_accelerator.MaxNumThreadsPerGroup < GemmKernels.LargeTileThreads)
            throw new ArgumentException($"The large-tile GEMM needs groups of {GemmKernels.LargeTileThreads} threads; this accelerator allows {_accelerator.MaxNumThreadsPerGroup}.", nameof(path));
        _largeTiles = true;
        _fp32.Large =
        [
            _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmLargeTilesNNKernel),
            _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmLargeTilesNTKernel),
            _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmLargeTilesTNKernel),
        ];
        Path = GemmPath.LargeTiles;
    }

    /// <summary>
    /// Loads the kernels with an explicit geometry (for tests and tuning). With all three arguments positive, the
    /// shared-memory kernel runs with groups of <paramref name="threadsX"/> x <paramref name="threadsY"/> threads, each
    /// computing 4 x 4 outputs, so tiles of C are <c>(4 * threadsY) x (4 * threadsX)</c>, and K staged
    /// <paramref name="tileK"/> at a time. With all three 0, the barrier-free register-blocked kernel runs.
    /// </summary>
    public GemmOps(Backend backend, int threadsX, int threadsY, int tileK)
    {
        _accelerator = backend.Accelerator;
        UsesSharedMemoryTiles = threadsX != 0 || threadsY != 0 || tileK != 0;
        Path = UsesSharedMemoryTiles ? GemmPath.SharedTiles : GemmPath.Direct;
        if (UsesSharedMemoryTiles)
        {
            Check.Positive(threadsX, nameof(threadsX));
            Check.Positive(threadsY, nameof(threadsY));
            Check.Positive(tileK, nameof(tileK));
            if ((long)threadsX * threadsY > _accelerator.MaxNumThreadsPerGroup)
                throw new ArgumentException($"A group of {threadsX} x {threadsY} threads exceeds the accelerator's {_accelerator.MaxNumThreadsPerGroup}.");
            var sharedBytes = (long)tileK * (4L * threadsX + 4L * threadsY + 2) * sizeof(float);
            if (sharedBytes > Math.Min(_accelerator.MaxSharedMemoryPerGroup, 48 * 1024))
                throw new ArgumentException($"Tiles of {4 * threadsY} x {4 * threadsX} x {tileK} need {sharedBytes} bytes of shared memory, more than the accelerator offers.");
            _threadsX = threadsX;
            _threadsY = threadsY;
            _tileK = tileK;
            _fp32 = new Kernels<float, float> { Gemm = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmKernel) };
        }
        else
        {
            _threadsX = 1;
            _threadsY = 1;
            _tileK = 1;
            _fp32 = new Kernels<float, float> { Gemm = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmDirectKernel) };
        }
        _biasBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int, float>(GemmKernels.BiasBackwardKernel);
        _bf16 = new(Load<Bf16, Bf16Storage, Bf16, Bf16Storage>);
        _bf16ToFp32 = new(Load<Bf16, Bf16Storage, float, Fp32Storage>);
        _fp16 = new(Load<Half, Fp16Storage, Half, Fp16Storage>);
        _fp16ToFp32 = new(Load<Half, Fp16Storage, float, Fp32Storage>);
        _biasBackwardBf16 = new(() => _accelerator.LoadKernel<ArrayView<float>, ArrayView<Bf16>, int, int, int, float>(GemmKernels.BiasBackwardGenericKernel<Bf16, Bf16Storage>));
        _biasBackwardFp16 = new(() => _accelerator.LoadKernel<ArrayView<float>, ArrayView<Half>, int, int, int, float>(GemmKernels.BiasBackwardGenericKernel<Half, Fp16Storage>));
        _biasGroup = Math.Min(Launch.GroupSize(_accelerator, 256), 1024);
        _biasColumns = Math.Min(_biasGroup, Math.Max(1, _accelerator.WarpSize));
    }

    /// <summary>True when products run a shared-memory tiled kernel, false for the barrier-free one.</summary>
    public bool UsesSharedMemoryTiles { get; }

    /// <summary>The kernel products run with.</summary>
    public GemmPath Path { get; }

    /// <summary>
    /// True when a product of this shape runs the large-tile kernels: their 32-bit offsets, which may run a tile and
    /// a K slice past each matrix, must fit.
    /// </summary>
    public static bool FitsLargeTiles(int m, int n, int k) =>
        ((long)m + GemmKernels.LargeTile) * (k + GemmKernels.LargeTileK) <= int.MaxValue
        && ((long)n + GemmKernels.LargeTile) * (k + GemmKernels.LargeTileK) <= int.MaxValue;

    // The shared-tile kernel's square side for a path: it is the path itself, or the large-tile path's fallback
    // (on the CPU accelerator that fallback is the barrier-free kernel).
    private static int FallbackSide(Accelerator accelerator, GemmPath path) =>
        path == GemmPath.Direct || (path == GemmPath.LargeTiles && IsCpu(accelerator)) ? 0
        : accelerator.MaxNumThreadsPerGroup >= 256 ? 16 : Math.Max(1, (int)Math.Sqrt(accelerator.MaxNumThreadsPerGroup));

    private static GemmPath DefaultPath(Accelerator accelerator) =>
        IsCpu(accelerator) ? GemmPath.Direct
        : accelerator.MaxNumThreadsPerGroup >= GemmKernels.LargeTileThreads ? GemmPath.LargeTiles : GemmPath.SharedTiles;

    private static bool IsCpu(Accelerator accelerator) => accelerator.AcceleratorType == AcceleratorType.CPU;

    /// <summary>
    /// <c>C (m, n) = alpha * op(A) . op(B) [+ bias broadcast over rows] [+ C if accumulate]</c>, row-major.
    /// NN: A (m, k), B (k, n). NT: A (m, k), B (n, k), i.e. <c>C = A . B^T</c>. TN: A (k, m), B (k, n), i.e. <c>C = A^T . B</c>.
    /// <paramref name="bias"/>: <c>default</c> (length 0) for none, else length n. Views must hold exactly
    /// the matrices' elements. <paramref name="c"/> must not alias <paramref name="a"/> or <paramref name="b"/>.
    /// </summary>
    public void Gemm(AcceleratorStream stream, ArrayView<float> c, ArrayView<float> a, ArrayView<float> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<float> bias = default, float alpha = 1f) =>
        Run(_fp32, stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// The product of the FP32 overload with BF16 A, B, C and bias: widened on load, FP32 accumulation, C rounded once
    /// to nearest even (with <paramref name="accumulate"/>, the old C is widened and added before that rounding).
    /// </summary>
    public void Gemm(AcceleratorStream stream, ArrayView<Bf16> c, ArrayView<Bf16> a, ArrayView<Bf16> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<Bf16> bias = default, float alpha = 1f) =>
        Run(_bf16.Value, stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>The product with FP16 A, B, C and bias; as the BF16 overload (FP16 overflows to infinity beyond 65504).</summary>
    public void Gemm(AcceleratorStream stream, ArrayView<Half> c, ArrayView<Half> a, ArrayView<Half> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<Half> bias = default, float alpha = 1f) =>
        Run(_fp16.Value, stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// The product with BF16 A and B into an FP32 C (and FP32 bias): the weight-gradient form
    /// <c>dW (FP32) += x^T . dy</c> with <see cref="GemmLayout.TN"/> and <paramref name="accumulate"/>, which keeps
    /// parameter gradients in FP32 across micro-batches.
    /// </summary>
    public void Gemm(AcceleratorStream stream, ArrayView<float> c, ArrayView<Bf16> a, ArrayView<Bf16> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<float> bias = default, float alpha = 1f) =>
        Run(_bf16ToFp32.Value, stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>The product with FP16 A and B into an FP32 C (and FP32 bias); as the BF16-into-FP32 overload.</summary>
    public void Gemm(AcceleratorStream stream, ArrayView<float> c, ArrayView<Half> a, ArrayView<Half> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<float> bias = default, float alpha = 1f) =>
        Run(_fp16ToFp32.Value, stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// The product over the storage type <typeparamref name="T"/> (float, <see cref="Bf16"/> or <see cref="Half"/>): A, B, C
    /// and the bias all of that type; FP32 runs the FP32 overload's kernels, the 16-bit types their overloads' kernels.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Gemm<T>(AcceleratorStream stream, ArrayView<T> c, ArrayView<T> a, ArrayView<T> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<T> bias = default, float alpha = 1f) where T : unmanaged =>
        Run(StorageDispatch.Pick<T, Kernels<T, T>, Kernels<Bf16, Bf16>, Kernels<Half, Half>>(_fp32, _bf16, _fp16),
            stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// The product of <typeparamref name="T"/> A and B into an FP32 C (and FP32 bias): the weight-gradient form that keeps
    /// parameter gradients in FP32 across micro-batches whatever the storage type (for float, the FP32 overload).
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Gemm<T>(AcceleratorStream stream, ArrayView<float> c, ArrayView<T> a, ArrayView<T> b,
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<float> bias = default, float alpha = 1f) where T : unmanaged =>
        Run(StorageDispatch.Pick<T, Kernels<T, float>, Kernels<Bf16, float>, Kernels<Half, float>>(_fp32, _bf16ToFp32, _fp16ToFp32),
            stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// The FP32 <c>Gemm</c> without bias over <paramref name="batch"/> contiguous matrices: A_i at <c>i * m * k</c>,
    /// B_i at <c>i * k * n</c>, C_i at <c>i * m * n</c>, with the same layout and semantics per matrix.
    /// Views must hold exactly <c>batch</c> matrices each.
    /// </summary>
    public void GemmBatched(AcceleratorStream stream, ArrayView<float> c, ArrayView<float> a, ArrayView<float> b,
        int batch, int m, int n, int k, GemmLayout layout, bool accumulate = false, float alpha = 1f) =>
        Run(_fp32, stream, c, a, b, default, batch, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// <c>dBias (n) += scale * column sums of dOut (rows, n)</c>. Deterministic (fixed summation order, no atomics).
    /// <paramref name="scale"/> 1 (the default) leaves the sums unchanged bit for bit.
    /// </summary>
    public void BiasBackward(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<float> dOut, int rows, int n, float scale = 1f) =>
        BiasBackward(_biasBackward, stream, dBias, dOut, rows, n, scale);

    /// <summary><c>dBias (n, FP32) += scale * column sums of dOut (rows, n, BF16)</c>, widened and summed in FP32; deterministic.</summary>
    public void BiasBackward(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<Bf16> dOut, int rows, int n, float scale = 1f) =>
        BiasBackward(_biasBackwardBf16.Value, stream, dBias, dOut, rows, n, scale);

    /// <summary><c>dBias (n, FP32) += scale * column sums of dOut (rows, n, FP16)</c>, widened and summed in FP32; deterministic.</summary>
    public void BiasBackward(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<Half> dOut, int rows, int n, float scale = 1f) =>
        BiasBackward(_biasBackwardFp16.Value, stream, dBias, dOut, rows, n, scale);

    /// <summary><c>dBias (n, FP32) += scale * column sums of dOut (rows, n)</c> over the storage type <typeparamref name="T"/>; for float, the FP32 overload.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void BiasBackward<T>(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<T> dOut, int rows, int n, float scale = 1f) where T : unmanaged =>
        BiasBackward(StorageDispatch.Pick<T, Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, int, int, int, float>,
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Bf16>, int, int, int, float>,
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<Half>, int, int, int, float>>(_biasBackward, _biasBackwardBf16, _biasBackwardFp16),
            stream, dBias, dOut, rows, n, scale);

    private void BiasBackward<T>(Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, int, int, int, float> kernel,
        AcceleratorStream stream, ArrayView<float> dBias, ArrayView<T> dOut, int rows, int n, float scale) where T : unmanaged
    {
        Check.Positive(rows, nameof(rows));
        Check.Positive(n, nameof(n));
        Check.Length(dBias, n, nameof(dBias));
        Check.Length(dOut, (long)rows * n, nameof(dOut));
        var blocks = Launch.CeilDiv(n, _biasColumns);
        kernel(stream, new KernelConfig(blocks, _biasGroup), dBias, dOut, rows, n, _biasColumns, scale);
    }

    private void Run<TIn, TOut>(Kernels<TIn, TOut> kernels, AcceleratorStream stream, ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b,
        ArrayView<TOut> bias, int batch, int m, int n, int k, GemmLayout layout, bool accumulate, float alpha)
        where TIn : unmanaged where TOut : unmanaged
    {
        Check.Positive(batch, nameof(batch));
        Check.Positive(m, nameof(m));
        Check.Positive(n, nameof(n));
        if (bias.Length != 0)
            Check.Length(bias, n, nameof(bias));
        Check.Positive(k, nameof(k));
        if (!Enum.IsDefined(layout))
            throw new ArgumentOutOfRangeException(nameof(layout), layout, "Unknown GEMM layout.");
        var (aShape, bShape) = layout switch
        {
            GemmLayout.NN => ($"({m}, {k})", $"({k}, {n})"),
            GemmLayout.NT => ($"({m}, {k})", $"({n}, {k})"),
            _ => ($"({k}, {m})", $"({k}, {n})"),
        };
        CheckMatrices(a, batch, (long)m * k, nameof(a), aShape);
        CheckMatrices(b, batch, (long)k * n, nameof(b), bShape);
        CheckMatrices(c, batch, (long)m * n, nameof(c), $"({m}, {n})");
        if (Overlaps(c, a) || Overlaps(c, b))
            throw new ArgumentException("'c' must not alias 'a' or 'b'.", nameof(c));

        if (kernels.Large is not null && FitsLargeTiles(m, n, k))
        {
            // ThreadsX = ThreadsY = 32 makes GemmDims count 128 x 128 tiles; the kernels' geometry is fixed.
            var large = new GemmDims(m, n, k, (int)layout, batch, (long)m * k, (long)k * n, (long)m * n,
                32, 32, GemmKernels.LargeTileK, alpha, accumulate, bias.Length != 0);
            var largeTiles = (long)large.TilesM * large.TilesN * batch;
            if (largeTiles > int.MaxValue)
                throw new ArgumentException($"A product of {batch} x ({m}, {n}) has too many output tiles for one launch.");
            var maxLargeGroups = Math.Max(1L, (long)_accelerator.MaxNumThreads * 2 / GemmKernels.LargeTileThreads);
            kernels.Large[(int)layout](stream, new KernelConfig((int)Math.Min(largeTiles, maxLargeGroups), GemmKernels.LargeTileThreads),
                c, a, b, bias.Length != 0 ? bias : c, large);
            return;
        }
        var dims = new GemmDims(m, n, k, (int)layout, batch, (long)m * k, (long)k * n, (long)m * n,
            _threadsX, _threadsY, _tileK, alpha, accumulate, bias.Length != 0);
        var tiles = (long)dims.TilesM * dims.TilesN * batch;
        if (tiles > int.MaxValue)
            throw new ArgumentException($"A product of {batch} x ({m}, {n}) has too many output tiles for one launch.");
        KernelConfig config;
        if (UsesSharedMemoryTiles)
        {
            var group = _threadsX * _threadsY;
            var maxGroups = Math.Max(1L, (long)_accelerator.MaxNumThreads * 4 / group);
            config = new KernelConfig((int)Math.Min(tiles, maxGroups), group, SharedMemoryConfig.RequestDynamic<float>(dims.SharedFloats));
        }
        else
        {
            config = Launch.Elementwise(_accelerator, tiles);
        }
        // A view of length 0 cannot be passed to every backend: hand the kernel c, which it never reads as bias.
        kernels.Gemm(stream, config, c, a, b, bias.Length != 0 ? bias : c, dims);
    }

    private static void CheckMatrices<T>(ArrayView<T> view, int batch, long elements, string name, string shape) where T : unmanaged
    {
        var expected = batch * elements;
        if (view.Length != expected)
            throw new ArgumentException(batch == 1
                ? $"'{name}' has {view.Length} elements, expected {expected} for shape {shape}."
                : $"'{name}' has {view.Length} elements, expected {expected} for {batch} matrices of shape {shape}.", name);
    }

    private static bool Overlaps<TX, TY>(ArrayView<TX> x, ArrayView<TY> y) where TX : unmanaged where TY : unmanaged
    {
        IContiguousArrayView xv = x, yv = y;
        if (x.Length == 0 || y.Length == 0 || !ReferenceEquals(xv.Buffer, yv.Buffer))
            return false;
        long xStart = xv.Index, yStart = yv.Index;
        return xStart < yStart + y.Length && yStart < xStart + x.Length;
    }
}
