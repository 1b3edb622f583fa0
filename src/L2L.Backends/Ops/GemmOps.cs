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

/// <summary>
/// Matrix products and the bias gradient, loaded once per accelerator. On GPUs the product runs
/// <see cref="GemmKernels.GemmKernel"/>: 16 x 16 threads (or the largest square group the device allows) with 4 x 4
/// outputs each, so 64 x 64 tiles, staging K 16 at a time in shared memory. On the CPU accelerator it runs
/// <see cref="GemmKernels.GemmDirectKernel"/>: there every simulated thread is an OS thread and a group barrier costs
/// hundreds of microseconds, so register blocking without shared memory is several times faster.
/// Results are deterministic for a given accelerator and geometry (no atomics).
/// </summary>
public sealed class GemmOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims> _gemm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int> _biasBackward;
    private readonly int _threadsX;
    private readonly int _threadsY;
    private readonly int _tileK;
    private readonly int _biasColumns;
    private readonly int _biasGroup;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator and picks the kernel and geometry for it.</summary>
    public GemmOps(Backend backend)
        : this(backend, DefaultSide(backend.Accelerator), DefaultSide(backend.Accelerator), DefaultTileK(backend.Accelerator))
    {
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
        _biasBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(GemmKernels.BiasBackwardKernel);
        _biasGroup = Math.Min(Launch.GroupSize(_accelerator, 256), 1024);
        _biasColumns = Math.Min(_biasGroup, Math.Max(1, _accelerator.WarpSize));
    }

    /// <summary>True when products run the shared-memory tiled kernel, false for the barrier-free one.</summary>
    public bool UsesSharedMemoryTiles { get; }

    private static bool IsCpu(Accelerator accelerator) => accelerator.AcceleratorType == AcceleratorType.CPU;

    private static int DefaultSide(Accelerator accelerator) =>
        IsCpu(accelerator) ? 0 : accelerator.MaxNumThreadsPerGroup >= 256 ? 16 : Math.Max(1, (int)Math.Sqrt(accelerator.MaxNumThreadsPerGroup));

    private static int DefaultTileK(Accelerator accelerator) => IsCpu(accelerator) ? 0 : 16;

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

    /// <summary><c>dBias (n) += column sums of dOut (rows, n)</c>. Deterministic (fixed summation order, no atomics).</summary>
    public void BiasBackward(AcceleratorStream stream, ArrayView<float> dBias, ArrayView<float> dOut, int rows, int n)
    {
        Check.Positive(rows, nameof(rows));
        Check.Positive(n, nameof(n));
        Check.Length(dBias, n, nameof(dBias));
        Check.Length(dOut, (long)rows * n, nameof(dOut));
        var blocks = Launch.CeilDiv(n, _biasColumns);
        _biasBackward(stream, new KernelConfig(blocks, _biasGroup), dBias, dOut, rows, n, _biasColumns);
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
