// Launchers for the matrix products of linear layers and attention, and the bias gradient.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

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
/// </summary>
public sealed class GemmOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims> _gemm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, float> _biasBackward;
    private readonly int _threadsX;
    private readonly int _threadsY;
    private readonly int _tileK;
    private readonly int _biasColumns;
    private readonly int _biasGroup;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>[]? _large;

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
        _large =
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
            _gemm = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmKernel);
        }
        else
        {
            _threadsX = 1;
            _threadsY = 1;
            _tileK = 1;
            _gemm = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(GemmKernels.GemmDirectKernel);
        }
        _biasBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int, float>(GemmKernels.BiasBackwardKernel);
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
        int m, int n, int k, GemmLayout layout, bool accumulate = false, ArrayView<float> bias = default, float alpha = 1f)
    {
        if (bias.Length != 0)
            Check.Length(bias, n, nameof(bias));
        Run(stream, c, a, b, bias, 1, m, n, k, layout, accumulate, alpha);
    }

    /// <summary>
    /// <see cref="Gemm"/> without bias over <paramref name="batch"/> contiguous matrices: A_i at <c>i * m * k</c>,
    /// B_i at <c>i * k * n</c>, C_i at <c>i * m * n</c>, with the same layout and semantics per matrix.
    /// Views must hold exactly <c>batch</c> matrices each.
    /// </summary>
    public void GemmBatched(AcceleratorStream stream, ArrayView<float> c, ArrayView<float> a, ArrayView<float> b,
        int batch, int m, int n, int k, GemmLayout layout, bool accumulate = false, float alpha = 1f) =>
        Run(stream, c, a, b, default, batch, m, n, k, layout, accumulate, alpha);

    /// <summary>
    /// <c>dBias (n) += scale * column sums of dOut (rows, n)</c>. Deterministic (fixed summation order, no atomics).
    /// <paramref name="scale"/> 1 (the default) leaves the sums unchanged bit for bit.
    /// </summary>
    public void BiasBackward(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<float> dOut, int rows, int n, float scale = 1f)
    {
        Check.Positive(rows, nameof(rows));
        Check.Positive(n, nameof(n));
        Check.Length(dBias, n, nameof(dBias));
        Check.Length(dOut, (long)rows * n, nameof(dOut));
        var blocks = Launch.CeilDiv(n, _biasColumns);
        _biasBackward(stream, new KernelConfig(blocks, _biasGroup), dBias, dOut, rows, n, _biasColumns, scale);
    }

    private void Run(AcceleratorStream stream, ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias,
        int batch, int m, int n, int k, GemmLayout layout, bool accumulate, float alpha)
    {
        Check.Positive(batch, nameof(batch));
        Check.Positive(m, nameof(m));
        Check.Positive(n, nameof(n));
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

        if (_large is not null && FitsLargeTiles(m, n, k))
        {
            // ThreadsX = ThreadsY = 32 makes GemmDims count 128 x 128 tiles; the kernels' geometry is fixed.
            var large = new GemmDims(m, n, k, (int)layout, batch, (long)m * k, (long)k * n, (long)m * n,
                32, 32, GemmKernels.LargeTileK, alpha, accumulate, bias.Length != 0);
            var largeTiles = (long)large.TilesM * large.TilesN * batch;
            if (largeTiles > int.MaxValue)
                throw new ArgumentException($"A product of {batch} x ({m}, {n}) has too many output tiles for one launch.");
            var maxLargeGroups = Math.Max(1L, (long)_accelerator.MaxNumThreads * 2 / GemmKernels.LargeTileThreads);
            _large[(int)layout](stream, new KernelConfig((int)Math.Min(largeTiles, maxLargeGroups), GemmKernels.LargeTileThreads),
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
        _gemm(stream, config, c, a, b, bias.Length != 0 ? bias : c, dims);
    }

    private static void CheckMatrices(ArrayView<float> view, int batch, long elements, string name, string shape)
    {
        var expected = batch * elements;
        if (view.Length != expected)
            throw new ArgumentException(batch == 1
                ? $"'{name}' has {view.Length} elements, expected {expected} for shape {shape}."
                : $"'{name}' has {view.Length} elements, expected {expected} for {batch} matrices of shape {shape}.", name);
    }

    private static bool Overlaps(ArrayView<float> x, ArrayView<float> y)
    {
        IContiguousArrayView xv = x, yv = y;
        if (x.Length == 0 || y.Length == 0 || !ReferenceEquals(xv.Buffer, yv.Buffer))
            return false;
        long xStart = xv.Index, yStart = yv.Index;
        return xStart < yStart + y.Length && yStart < xStart + x.Length;
    }
}
